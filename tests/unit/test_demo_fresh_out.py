"""``rtp demo`` starts from an empty store however often it is run into one --out."""

from rtp.demo.run import fresh_out


def test_a_previous_runs_store_and_models_are_removed_other_files_kept(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    (out / "features" / "dead_letters").mkdir(parents=True)
    (out / "features" / "online.db").write_bytes(b"state of the last run")
    (out / "models" / "sequential" / "1").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    assert fresh_out(out) == out
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert "removed the previous run's features, models" in capsys.readouterr().out


def test_a_new_out_is_created_quietly(tmp_path, capsys) -> None:
    out = fresh_out(tmp_path / "a" / "b")
    assert out.is_dir() and not any(out.iterdir())
    assert capsys.readouterr().out == ""
