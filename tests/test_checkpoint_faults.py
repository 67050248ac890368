"""Fault injection on checkpoints (benchmarks/checkpoint_faults.py --quick): random bit flips
in every file, saves SIGKILLed before and after their last renames, processes racing to
save to one path. The full sweep (every kill point, 25 flips per file) is the benchmark."""

import importlib.util
import pathlib
import re

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "checkpoint_faults.py"


def test_flips_kills_and_races_quick(capsys):
    spec = importlib.util.spec_from_file_location("_checkpoint_faults", SCRIPT)
    faults = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(faults)
    code = faults.main(["--quick", "--racers", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    tried, detected, harmless, failed = map(int, re.search(
        r"bit flips: (\d+) tried, (\d+) detected .*?, (\d+) harmless .*?, (\d+) failed", out).groups())
    assert failed == 0 and detected > 0 and tried == detected + harmless
    assert re.search(r"killed saves: 2 kill points tried, 2 recovered", out), out
    assert "loads one racer's model=True, one step left=True" in out
