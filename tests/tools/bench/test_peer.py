"""The dlrm_main peer: its flags from our config, its launch (real torchrun, 2 processes) and its tqdm throughput.

The peer here is a stand-in written by the test: a script that takes dlrm_main's flags and
draws dlrm_main's training bar with tqdm (rank 0), so what is tested is our launcher and
parser, on the output format dlrm_main really prints.
"""

import json
import textwrap

import pytest

from torchrec_app.cli import main as cli_main
from torchrec_app.config import ConfigError, resolve_config
from torchrec_app.tools.bench.peer import PeerRunError, peer_flags, peer_markdown, run_peer, summarize_peer

FAKE_DLRM_MAIN = textwrap.dedent('''
    """Prints what torchrec_dlrm/dlrm_main.py prints while training (rank 0's tqdm bar), and times itself."""
    import argparse, json, os, sys, time
    from tqdm import tqdm

    parser = argparse.ArgumentParser()
    parser.add_argument("--batch_size", type=int)
    parser.add_argument("--limit_train_batches", type=int)
    parser.add_argument("--fail", action="store_true")
    args, _ = parser.parse_known_args()
    if args.fail:
        print("RuntimeError: no CUDA here", flush=True)
        sys.exit(3)
    if os.environ["LOCAL_RANK"] == "0":
        start = time.perf_counter()
        pbar = tqdm(iter(int, 1), desc="Epoch 0", total=args.limit_train_batches, disable=False)
        for step in range(args.limit_train_batches):
            time.sleep(0.04 if step < 2 else 0.02)  # slower first steps, as a real pipeline fills
            pbar.update(1)
        elapsed = time.perf_counter() - start
        print("Total number of iterations:", args.limit_train_batches)
        json.dump({"seconds": elapsed, "world": os.environ["WORLD_SIZE"]}, open("timing.json", "w"))
        print("AUROC over val set: 0.5.")
''')


@pytest.fixture()
def fake_peer(tmp_path):
    script = tmp_path / "torchrec_dlrm" / "dlrm_main.py"
    script.parent.mkdir()
    script.write_text(FAKE_DLRM_MAIN)
    return script


def test_flags_follow_the_case_config():
    config = resolve_config("bench_kaggle_like_dcnv2", ["train.batch_size=512"])
    flags = peer_flags(config, list(range(1, 27)), steps=12)
    value = dict(zip(flags[::2], flags[1::2]))
    assert value["--num_embeddings_per_feature"] == ",".join(map(str, range(1, 27)))
    assert value["--batch_size"] == "512" and value["--limit_train_batches"] == "12"
    assert flags[flags.index("--interaction_type") + 1 :][:5] == ["dcn", "--dcn_num_layers", "3", "--dcn_low_rank_dim", "512"]
    assert "--adagrad" in flags


@pytest.mark.parametrize(
    "overrides,sizes,message",
    [
        (["model.name=masknet"], [10] * 26, "dlrm_main builds dlrm"),
        ([], [10] * 13, "26 sparse features"),
        (["sparse.dims=C1:16"], [10] * 26, "one width"),
    ],
)
def test_cases_dlrm_main_cannot_express_are_refused(overrides, sizes, message):
    with pytest.raises(ConfigError, match=message):
        peer_flags(resolve_config("bench_kaggle_like_dlrm", overrides), sizes, steps=10)


def test_runs_on_two_processes_and_reads_the_bar(fake_peer, tmp_path):
    flags = ["--batch_size", "64", "--limit_train_batches", "20", "--adagrad"]
    result = run_peer(fake_peer, 2, flags, global_batch_size=128, run_dir=tmp_path / "peer-0", timeout_s=120)
    own = json.loads((fake_peer.parent / "timing.json").read_text())  # the script ran in its own directory
    assert own["world"] == "2" and result["steps"] == 20
    assert result["samples_per_second"] == pytest.approx(20 * 128 / own["seconds"], rel=0.1)
    assert result["steady_samples_per_second"] > result["samples_per_second"]  # warm-up steps left out
    assert "Total number of iterations: 20" in (tmp_path / "peer-0" / "peer.log").read_text()

    ours = tmp_path / "ours"
    ours.mkdir()  # the trainer's log intervals: steps 1-10 slow (warm-up), then 2x and 3x the peer's steady rate
    steady = result["steady_samples_per_second"]
    (ours / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 0.5, "samples_per_second": v}) + "\n"
                                                for s, v in [(10, 1.0), (20, 2 * steady), (30, 3 * steady)]))  # fmt: skip
    case = {"name": "dlrm_2p", "model": "dlrm", "nproc": 2, "global_batch_size": 128,
            "samples_per_second": {"median": 2.0 * result["samples_per_second"]},
            "ceiling_samples_per_second": {"median": 3.0 * result["samples_per_second"]},
            "runs": [{"kind": "end_to_end", "run_dir": str(ours)}]}  # fmt: skip
    case["peer"] = summarize_peer(case, [result], flags)
    assert case["peer"]["ours_over_peer"] == pytest.approx(2.0) and case["peer"]["ceiling_over_peer"] == pytest.approx(3.0)
    assert case["peer"]["steady"]["end_to_end"] == pytest.approx(2.4 * steady)  # 20 steps in 1/2 + 1/3 of the time
    row = peer_markdown([case])[-1]
    assert row.startswith("| dlrm_2p | dlrm | 2 |") and "| 2.00× | 3.00× |" in row and "| 2.40× | – |" in row


def test_a_failing_peer_is_reported_with_its_log(fake_peer, tmp_path):
    with pytest.raises(PeerRunError, match=r"(?s)exited with 1.*ends with:\nRuntimeError: no CUDA here$"):
        run_peer(fake_peer, 1, ["--fail"], global_batch_size=64, run_dir=tmp_path / "peer-0", timeout_s=120)


def test_bench_refuses_a_missing_peer_script_before_any_run(tmp_path, capsys):
    code = cli_main(["bench", "--recipe", "tiny", "--out", str(tmp_path / "bench"), "--peer-dlrm", str(tmp_path / "nope.py")])
    assert code != 0 and not (tmp_path / "bench").exists()
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--peer-dlrm" in line and "nope.py: no such file" in line and "data/external/dlrm" in line
