"""Tests for components.runtime: Streamlit's after-run clean-up must not reset Keras."""

import keras
from keras.src.backend.common import global_state
from streamlit.runtime.scriptrunner.script_runner import _clean_problem_modules

from components.runtime import keep_keras_session


def test_streamlit_cleanup_no_longer_clears_the_keras_session():
    keep_keras_session()
    keep_keras_session()  # idempotent
    global_state.set_global_attribute("freezelab_probe", 1)
    _clean_problem_modules()  # what Streamlit runs after every script run
    assert global_state.get_global_attribute("freezelab_probe") == 1


def test_direct_calls_still_clear_the_session():
    keep_keras_session()
    global_state.set_global_attribute("freezelab_probe", 1)
    keras.backend.clear_session()
    assert global_state.get_global_attribute("freezelab_probe") is None
