"""docs/commands.md matches the parser, and every argument of every command has a help line."""

import importlib.util

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
