"""docs/commands.md matches the parser, and every argument of every command and script has a help line."""

import ast
import importlib.util
import subprocess

import pytest

from conftest import ROOT


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_commands", ROOT / "tools" / "gen_commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_commands_page_is_current():
    gen = load_generator()
    page = ROOT / "docs" / "commands.md"
    assert page.is_file(), "docs/commands.md missing: run python tools/gen_commands.py"
    assert page.read_text(encoding="utf-8") == gen.render(), \
        "docs/commands.md is stale: rerun python tools/gen_commands.py"
    assert gen.render() == gen.render()  # deterministic


def test_every_argument_has_help():
    gen = load_generator()
    parser = gen.build_parser()
    commands = gen.subcommands(parser)
    missing = [f"asrkd {a.option_strings[0] if a.option_strings else a.dest}" for a in gen.arguments(parser)
               if not (a.help or "").strip()]
    missing += [f"asrkd {name}" for name, (_, purpose) in commands.items() if not purpose.strip()]
    for name, (sub, _) in commands.items():
        missing += [f"asrkd {name} {a.option_strings[0] if a.option_strings else a.dest}"
                    for a in gen.arguments(sub) if not (a.help or "").strip()]
    assert len(commands) > 20
    assert not missing, f"arguments without a help string: {missing}"


def test_every_script_argument_has_help():
    """The scripts beside the CLI (bench/, local/, tools/, recipes/) too: every add_argument has help=."""
    scripts = [f for d in ("bench", "local", "tools", "recipes") for f in (ROOT / d).rglob("*.py")]
    missing = [f"{f.relative_to(ROOT)}:{call.lineno}" for f in scripts for call in ast.walk(ast.parse(f.read_text()))
               if isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "add_argument"
               and not any(k.arg == "help" for k in call.keywords)]
    assert len(scripts) > 10
    assert not missing, f"arguments without a help string: {missing}"


@pytest.mark.parametrize("script", ["tools/lock.sh", "tools/setup_env.sh", "tools/slurm.sh"])
def test_tool_scripts_print_their_usage(script, tmp_path):
    """--help prints the script's header and does nothing else (no venv, no lock, no cluster)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ASRKD_VENV": str(tmp_path / "venv")}
    proc = subprocess.run(["bash", ROOT / script, "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    header = (ROOT / script).read_text().splitlines()[1].removeprefix("# ")
    assert proc.stdout.splitlines()[0] == header and not proc.stderr
    assert list(tmp_path.iterdir()) == []
