"""Where a dataset is built, how it replaces the previous one, and what a rerun resumes.

``OUT/metadata.json`` names the files of the complete dataset, all inside one build
directory ``OUT/build-<fingerprint>/`` (or, for a dataset written before build directories
existed, in ``OUT/train``, ``OUT/valid``, ...). A run builds in its own directory and
publishes by replacing ``metadata.json``: one atomic rename, so a reader sees the old
dataset or the new one. The entries of the superseded dataset are listed in the new
build's ``_progress/superseded.json`` before the rename and deleted after it; a run killed
in between finishes the deletion the next time (:func:`finish_swap`). ``truth.json`` is
replaced after the rename (a kill in between leaves the new data with the old
``truth.json`` until the next run with these inputs).

The build directory is named by a fingerprint of the inputs (paths, sizes, mtimes), the
task layout and the settings: a rerun with the same ones finds its build and its
``_progress`` markers and redoes only unfinished work.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
from dataclasses import replace

from torchrec_app.config.data import PreprocessConfig
from torchrec_app.data.metadata import DatasetMetadata, load_metadata, save_metadata
from torchrec_app.data.preprocess.plan import Task
from torchrec_app.data.splits import Source
from torchrec_app.data.truth import TRUTH_FILE
from torchrec_app.utils.fs import atomic_path, write_json_atomic

PROGRESS_DIR = "_progress"
VOCAB_DIR = "vocab"
BUILD_PREFIX = "build-"
_LEGACY_ENTRIES = ("train", "valid", "test", "vocab", PROGRESS_DIR)  # a dataset written before build directories


def fingerprint(sources: list[Source], tasks: list[Task], config: PreprocessConfig, policy: str) -> str:
    """sha256 (hex) of what the output depends on: the inputs (path, size, mtime, split rule),
    the task layout, the settings (less ``workers`` and ``max_bad_rows``) and the policy."""
    relevant = replace(config, workers=0, max_bad_rows=0)
    state = {
        "sources": [(s.path, os.path.getsize(s.path), os.stat(s.path).st_mtime_ns, repr(s.rule)) for s in sources],
        "tasks": [(t.path, t.start, t.length) for t in tasks],
        "config": repr(relevant),
        "policy": policy,
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()


def live_entries(out_dir: str) -> set[str]:
    """Top-level entries of ``out_dir`` that its complete dataset uses (none if there is none)."""
    try:
        meta = load_metadata(out_dir)
    except (FileNotFoundError, ValueError):
        return set()
    paths = [f.path for entries in meta.files.values() for f in entries] + [meta.vocab_dir]
    live = {p.replace(os.sep, "/").split("/")[0] for p in paths if p}
    live = {name for name in live if name.startswith(BUILD_PREFIX) or name in _LEGACY_ENTRIES}  # only what we write
    if not any(name.startswith(BUILD_PREFIX) for name in live):
        live |= {name for name in _LEGACY_ENTRIES if os.path.exists(os.path.join(out_dir, name))}
    return live


def finish_swap(out_dir: str, live: set[str]) -> None:
    """Delete what the published build superseded (a no-op once done)."""
    for name in sorted(live):
        record = os.path.join(out_dir, name, PROGRESS_DIR, "superseded.json")
        if not os.path.exists(record):
            continue
        with open(record) as f:
            superseded = json.load(f)
        for entry in superseded:
            if entry not in live and os.path.isdir(os.path.join(out_dir, entry)):
                shutil.rmtree(os.path.join(out_dir, entry))
        os.remove(record)


def prepare_build(out_dir: str, digest: str) -> str:
    """The build directory of this fingerprint, ready to (re)start work; the live dataset is untouched.

    Deletes abandoned builds (other fingerprints, not live) and half-written files of this
    build; keeps this build's finished tasks and vocabularies (resume).
    """
    build = os.path.join(out_dir, BUILD_PREFIX + digest[:12])
    live = live_entries(out_dir)
    finish_swap(out_dir, live)
    for name in os.listdir(out_dir):
        path = os.path.join(out_dir, name)
        if name.startswith(BUILD_PREFIX) and name not in live and path != build:
            shutil.rmtree(path)
        elif name.startswith(".") and ".tmp-" in name:  # utils.fs temporaries of metadata.json / truth.json
            os.remove(path)
    for pattern in ("*.tmp", ".*.tmp-*"):  # this module's part files, and utils.fs's temporaries
        for tmp in glob.glob(os.path.join(glob.escape(build), "**", pattern), recursive=True):
            os.remove(tmp)
    plan = os.path.join(build, PROGRESS_DIR, "plan.json")
    same = False
    if os.path.exists(plan):
        with open(plan) as f:
            try:
                same = json.load(f).get("fingerprint") == digest
            except json.JSONDecodeError:
                same = False
    if not same:
        shutil.rmtree(build, ignore_errors=True)
        os.makedirs(os.path.join(build, PROGRESS_DIR))
        write_json_atomic(plan, {"fingerprint": digest})
    return build


def publish(out_dir: str, build: str, meta: DatasetMetadata, sources: list[Source]) -> None:
    """Make the finished ``build`` the dataset of ``out_dir`` (one rename), then drop the old one."""
    name = os.path.basename(build)
    superseded = sorted(live_entries(out_dir) - {name})
    write_json_atomic(os.path.join(build, PROGRESS_DIR, "superseded.json"), superseded)
    save_metadata(out_dir, meta)  # the swap
    copy_truth(sources, out_dir)
    finish_swap(out_dir, {name})


def copy_truth(sources: list[Source], out_dir: str) -> None:
    """Copy the generator's truth.json beside the inputs, or remove a previous dataset's."""
    for directory in dict.fromkeys(os.path.dirname(s.path) for s in sources):
        truth = os.path.join(directory, TRUTH_FILE)
        if os.path.isfile(truth):
            with atomic_path(os.path.join(out_dir, TRUTH_FILE)) as tmp:
                shutil.copyfile(truth, tmp)
            return
    if os.path.exists(os.path.join(out_dir, TRUTH_FILE)):
        os.remove(os.path.join(out_dir, TRUTH_FILE))
