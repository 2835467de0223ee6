"""The machine line of the benchmark reports: the load note flags a busy start only."""
from bench.quality.environment import BUSY_LOAD, load_note, machine_line


def test_a_quiet_start_is_not_flagged():
    assert load_note([0.42, 0.56, 0.31]) == "load average [0.42, 0.56, 0.31] at the start"


def test_a_busy_start_is_flagged():
    note = load_note([BUSY_LOAD, 0.5, 0.2])
    assert note.startswith(f"load average [{BUSY_LOAD}, 0.5, 0.2] at the start (other work ran within the minute")


def test_an_unknown_load_says_so():
    assert load_note(None) == "load average unknown at the start"


def test_machine_line_carries_the_note():
    result = {"machine": {"cores": 2, "memory_gb": 23.5, "load_average": [2.5, 2.0, 1.0]},
              "versions": {"spark": "4.2.0"}, "git": {"commit": "0123456789abcdef", "dirty": False},
              "command": "python -m bench.x"}
    line = machine_line(result)
    assert line == ("Machine: 2 cores, 23.5 GB, load average [2.5, 2.0, 1.0] at the start (other work ran "
                    "within the minute before, maybe during the run too). Spark 4.2.0, commit 0123456789. Command: "
                    "`python -m bench.x`.")
