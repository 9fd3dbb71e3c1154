"""FreezeLab dashboard entry point: wires models/ (Keras core) to components/ (rendering)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import streamlit as st

from models import LayerTree, build_default_transfer_model

st.set_page_config(page_title="FreezeLab", page_icon="❄", layout="wide")


@st.cache_resource(show_spinner="Loading the bundled model...")
def default_model_template() -> tuple[dict, list]:
    """Read-only template shared by all sessions: the model's config and weights."""
    model = build_default_transfer_model()
    return model.get_config(), model.get_weights()


def session_model():
    """Each session builds and keeps its own copy: freezing one never touches another."""
    if "model" not in st.session_state:
        import keras

        config, weights = default_model_template()
        model = keras.Model.from_config(config)
        model.set_weights(weights)
        st.session_state.model = model
    return st.session_state.model


st.title("❄ FreezeLab")
tree = LayerTree(session_model())
totals = tree.totals()
columns = st.columns(4)
columns[0].metric("Trainable params", f"{totals.trainable:,}")
columns[1].metric("Non-trainable params", f"{totals.non_trainable:,}")
columns[2].metric("Total params", f"{totals.total:,}")
columns[3].metric("Trainable", f"{totals.trainable_fraction:.1%}")
st.dataframe(tree.frame(), hide_index=True, use_container_width=True)
