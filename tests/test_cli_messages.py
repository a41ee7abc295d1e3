"""What a user sees: errors once and unwrapped in a log, progress lines when stderr is not a
terminal, the workspace variable everywhere, exit codes that name the real failure, and a
README whose command table lists every option."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from stdr_deploy.cli import COMMANDS, cli
from stdr_deploy.errors import UserInputError
from stdr_deploy.progress import Activity, PlainProgress

ROOT = Path(__file__).resolve().parents[1]
HOSTS = Path(__file__).resolve().parent / "hosts"
CLI = [sys.executable, "-m", "stdr_deploy.cli"]
TIMESTAMP = r"\d\d:\d\d:\d\d "


def run(*args: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, **options)


def test_an_error_is_printed_once_on_one_line_however_long(tmp_path):
    plan = tmp_path / ("a-rather-long-folder-name-" * 6) / "plan.json"
    done = run("render", "--plan", str(plan))
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert [line for line in lines if line.startswith("error:")] == [f"error: plan file {plan} not found"]
    assert done.stderr.count(str(plan)) == 1 and len(lines) == 2  # the error and its hint


def test_an_unreadable_image_is_reported_once(tmp_path, shared):
    missing = tmp_path / "missing.png"
    good = shared / "testdata/scenes_A/img00.png"
    done = run("ocr", str(missing), str(good))
    assert done.returncode == 2
    assert done.stderr.count("No such file or directory") == 1, done.stderr
    assert f"1 of 2 images could not be read (why: above): {missing}" in done.stderr
    assert re.search(TIMESTAMP + r"reading img00\.png", done.stderr)  # progress lines in a log
    assert done.stdout.startswith("img00.png: ")


def test_ocr_against_a_dead_server_exits_7_and_says_to_start_it(tmp_path, shared):
    image = shared / "testdata/scenes_A/img00.png"
    for url in ("http://127.0.0.1:9", "grpc://127.0.0.1:9"):  # port 9 (discard): nothing listens
        done = run("ocr", "--url", url, str(image), str(image))
        assert done.returncode == 7, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"no answer from the server at {url}" in errors[0]
        assert "stdr-deploy serve" in done.stderr and "image" not in done.stderr.split("hint:")[1]
        assert "leaked shared_memory" not in done.stderr  # the region made for the image was unlinked


def test_weights_list_in_a_pipe_keeps_whole_hashes_and_paths():
    from stdr_deploy.weights import WEIGHTS, local_path

    result = CliRunner().invoke(cli, ["weights", "list"])
    assert result.exit_code == 0
    for info in WEIGHTS.values():
        assert info.sha256 in result.stderr
        path = local_path(info)
        if path is not None:
            assert str(path) in result.stderr
    assert "…" not in result.stderr


def test_long_steps_print_start_heartbeat_and_end_lines(capsys):
    import time

    running = Activity("export craft parity", heartbeat_s=0.05, detail="2 shapes")
    time.sleep(0.2)
    running.end()
    running.end()  # once only
    with PlainProgress("export craft") as bar:
        task = bar.add_task("check", total=2)
        bar.advance(task)
        bar.advance(task)
        bar.add_task("simplify")  # never finished: the exit says so
    lines = capsys.readouterr().err.splitlines()
    assert all(re.match(TIMESTAMP, line) for line in lines)
    assert lines[0].endswith("export craft parity: started (2 shapes)")
    assert any(line.endswith(" s)") and "still running" in line for line in lines[1:-4])
    assert re.search(r"export craft parity: done in 0\.\d s$", lines[-5])
    assert lines[-4].endswith("export craft check: started")
    assert re.search(r"export craft check: done in \d\.\d s$", lines[-3])
    assert lines[-2].endswith("export craft simplify: started")
    assert re.search(r"export craft simplify: stopped in", lines[-1])


def _plan_into(workspace: Path) -> dict:
    plan = json.loads(run("plan", "--host", str(HOSTS / "cpu-xeon-2core.json"), "--recognizer", "crnn-en", "--json").stdout)
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "plan.json").write_text(json.dumps(plan))
    return plan


def test_render_and_smoke_read_the_plan_from_the_workspace_variable(tmp_path):
    ws = tmp_path / "elsewhere"
    env = {"STDR_DEPLOY_WORKSPACE": str(ws)}
    missing = CliRunner().invoke(cli, ["smoke", "--url", "http://127.0.0.1:9"], env=env)
    assert isinstance(missing.exception, UserInputError) and str(ws / "plan.json") in str(missing.exception)
    _plan_into(ws)
    stand_ins = []
    for name in ("craft", "crnn_en"):
        path = tmp_path / name / "model.onnx"
        path.parent.mkdir()
        path.write_bytes(b"stand-in: render only links model files")
        stand_ins += ["--artifact", f"{name}={path}"]
    result = CliRunner().invoke(cli, ["render", "--out", str(tmp_path / "repo"), *stand_ins, "--dry-run", "--json"],
                                env=env)
    assert result.exit_code == 0, result.output
    assert "pipeline/config.pbtxt" in [f["path"] for f in json.loads(result.stdout)["files"]]
    for name in ("auto", "serve"):
        help_text = CliRunner().invoke(cli, [name, "--help"], env=env).output
        assert "$STDR_DEPLOY_WORKSPACE" in help_text


def test_the_readme_command_table_lists_every_option():
    """Each row names all long options of its command (bench's row points to its --help instead)."""
    readme = (ROOT / "README.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `stdr-deploy (\w+).*$", readme, re.M)}
    ctx = click.Context(cli)
    for name in sorted(set(COMMANDS) - {"bench"}):
        command = cli.get_command(ctx, name)
        commands = command.commands.values() if isinstance(command, click.Group) else [command]
        options = {o for c in commands for p in c.params for o in p.opts if o.startswith("--")}
        assert name in rows, f"README has no row for {name}"
        missing = sorted(o for o in options if not re.search(re.escape(o) + r"\b", rows[name]))
        assert not missing, f"README row of `{name}` lacks {missing}"
