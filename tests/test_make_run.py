"""`make run`'s last step, as a user sees it: samples in, results printed, exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from emulators.stack.environment import REPO, child_environment

pytestmark = pytest.mark.e2e  # Azurite, the emulators and a worker host, as `make run` starts them


@pytest.mark.slow(seconds=30)
def test_run_prints_every_sample_result(tmp_path: Path) -> None:
    env = child_environment({"LOCAL_AZURE_DIR": str(tmp_path)})
    env.pop("AZURE_OPENAI_ENDPOINT", None)
    done = subprocess.run(
        [sys.executable, "-m", "emulators.run", "--settings", str(tmp_path / "absent.json"), "--timeout", "60"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    samples = sorted(p.name for p in (REPO / "samples").glob("*.json"))
    for name in samples:
        assert name in done.stdout
    assert "✗ 05-invalid.json -> sample-invalid: parameter_not_allowed" in done.stdout
    # Today's default is a reasoning model: its sample shows the reasoning tokens, and the sample with
    # too small a budget fails saying so instead of "succeeding" with no answer.
    reasoning = next(line for line in done.stdout.splitlines() if "06-reasoning.json" in line)
    assert reasoning.startswith("✓") and "[gpt-5.4-mini-2026-03-17, " in reasoning and " reasoning]" in reasoning
    assert "✗ 07-budget-trap.json -> sample-budget-trap: output_budget_exhausted" in done.stdout
    # The batch-lane sample is staged, submitted and collected by the app's timers while make run waits.
    batched = next(line for line in done.stdout.splitlines() if "08-batch.json" in line)
    assert batched.startswith("✓ 08-batch.json -> sample-batch: [gpt-5.4-mini-batch] ") and ", batch lane (" in batched
    # Issue 22's samples: a Responses-only model answers through the Responses API; a background job thinks ~20 s
    # while the other samples are answered; a flex job finds no flex capacity and falls back before its deadline;
    # an answer cut by the content filter fails with its category, the partial text kept and flagged.
    lines = done.stdout.splitlines()
    responses = next(line for line in lines if "09-responses.json" in line)
    assert (
        responses.startswith("✓ 09-responses.json -> sample-responses: [gpt-5.1-codex] ")
        and ", Responses API]" in responses
    )
    background = next(i for i, line in enumerate(lines) if line.startswith("✓ 10-background.json -> sample-background"))
    assert background > next(i for i, line in enumerate(lines) if line.startswith("✓ 01-prompt.json"))
    note = next(line for line in lines if line.startswith("sample-background: background response resp_"))
    meanwhile = int(note.split("meanwhile ")[1].split()[0])
    assert meanwhile >= 8, note  # every live sample but the flex one at least, answered while the model thought
    flex = next(line for line in lines if line.startswith("sample-flex: asked for flex"))
    assert "fell back to the default tier" in flex and int(flex.split("tier ")[1].split()[0]) > 0, flex
    assert (
        "✗ 12-filtered.json -> sample-filtered: content_filter: the answer was cut by Azure OpenAI's content filter: "
        "hate (high) (partial answer kept, flagged: '[gpt-5.1-codex] Repeat after me: ')" in done.stdout
    )
    # One trace per sample, from the producer's send through the worker to the model, at the local receiver.
    assert "traces (OTLP receiver at http://127.0.0.1:" in done.stdout and "no traces received" not in done.stdout
    for job_id in ("sample-prompt", "sample-reasoning", "sample-budget-trap"):
        assert f"{job_id} trace " in done.stdout
        line = next(line for line in done.stdout.splitlines() if f"{job_id} trace " in line)
        assert ": send jobs > process jobs > [chat gpt-5.4-mini" in line, line
    assert "gen_ai.client.token.usage" in done.stdout
    assert f"summary: {len(samples)}/{len(samples)} done" in done.stdout
    assert "reply_to notice" in done.stdout
    assert "Traceback" not in (tmp_path / "worker.log").read_text()
