"""What `deploy/start_replicas.py` hands each process (no process is started here)."""

from pathlib import Path

from deploy.start_replicas import Replicas


def test_the_replicas_share_the_runs_folder_given_even_with_a_ray_head(tmp_path, monkeypatch):
    # The server's own environment names another runs folder; the one given must win, Ray or not
    # (the Ray head's variables once replaced the replicas' whole environment with the caller's).
    monkeypatch.setenv("FREEZELAB_RUNS_DIR", str(tmp_path / "not-this-one"))
    monkeypatch.setenv("FREEZELAB_EXECUTOR", "local")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    shared = tmp_path / "shared-runs"
    for on_ray in (False, True):
        replicas = Replicas(
            runs_dir=shared, folder=tmp_path / "logs", ray=on_ray, ray_port=6401,
            environment={"EXTRA": "1"},
        )  # fmt: skip
        (tmp_path / "logs").mkdir(exist_ok=True)
        environment = replicas._replica_environment()
        assert environment["FREEZELAB_RUNS_DIR"] == str(shared)
        assert environment["EXTRA"] == "1"
        if on_ray:
            assert environment["FREEZELAB_EXECUTOR"] == "ray"
            assert environment["RAY_ADDRESS"] == "127.0.0.1:6401"
            assert environment["RAY_AUTH_MODE"] == "token"
            token = Path(environment["RAY_AUTH_TOKEN_PATH"])
            assert token.parent == tmp_path / "logs" and len(token.read_text()) == 64
        else:
            assert environment["FREEZELAB_EXECUTOR"] == "local"
            assert "RAY_AUTH_MODE" not in environment
