"""maximumInstanceCount from the quota, for the azd preprovision hook (preflight.py).

Flex Consumption scales a queue trigger out on queue length, up to the Function App's
maximumInstanceCount. Each instance runs host.json's batchSize + newBatchThreshold jobs at once, so a
backlog turns into instances x slots concurrent model calls, all drawing on one deployment's tokens
per minute (two with the pool's second account). Instances past what the quota can feed only wait in
the pacing gate or meet 429s, so the template derives the cap from the quota unless it is set:

    maximumInstanceCount = ceil( TPM / (slots x 60 / seconds per call x tokens per call) ), 1 to 1,000

resources.bicep computes the same number (var instanceCap; tests/infra evaluates both and compares).
This module states it, and how it was reached, in the hook's pass line, and refuses a count the
region's Flex Consumption does not take (the Function App Stacks API's lowest/highest maximum
instance count, as `az functionapp list-flexconsumption-runtimes` prints them; when the listing has
no such field, 1 and 1,000 are assumed).

Inputs (azd environment; defaults = main.bicep's): MAXIMUM_INSTANCE_COUNT (0: derive),
EXPECTED_TOKENS_PER_CALL (prompt + output budget, what admission charges), EXPECTED_SECONDS_PER_CALL.

Standard library only, as the hook is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# azd environment value -> (main.bicep parameter, default); preflight.PARAMETERS includes these.
PARAMETERS: dict[str, tuple[str, str]] = {
    "MAXIMUM_INSTANCE_COUNT": ("maximumInstanceCount", "0"),
    "EXPECTED_TOKENS_PER_CALL": ("expectedTokensPerCall", "1000"),
    "EXPECTED_SECONDS_PER_CALL": ("expectedSecondsPerCall", "5"),
}
HOST_JSON = Path(__file__).resolve().parents[2] / "host.json"
# main.bicep's @minValue/@maxValue of maximumInstanceCount, and Flex Consumption's range when the
# region's listing does not say.
LOWEST, HIGHEST = 1, 1000
SECONDS_PER_MINUTE = 60


class SizingError(Exception):
    """A value the template would refuse; the message names the fix."""


def host_concurrency(host_json: Path = HOST_JSON) -> tuple[int, int]:
    """(batchSize, newBatchThreshold) of host.json's queues extension, with the extension's defaults
    (16, and batchSize / 2). One instance runs their sum at once."""
    queues = (json.loads(host_json.read_text()).get("extensions") or {}).get("queues") or {}
    batch = int(queues.get("batchSize", 16))
    return batch, int(queues.get("newBatchThreshold", batch // 2))


def _whole(env: Mapping[str, str], name: str, minimum: int, maximum: int | None = None) -> int:
    default = PARAMETERS[name][1]
    raw = (env.get(name) or "").strip() or default
    if not raw.isdigit() or int(raw) < minimum or (maximum is not None and int(raw) > maximum):
        bound = f"{minimum} to {maximum}" if maximum is not None else f"{minimum} or more"
        raise SizingError(f"{name}={raw} is not a whole number from {bound}. Fix: azd env set {name} {default}")
    return int(raw)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Sizing:
    """What the cap is derived from, and the cap."""

    capacities: tuple[tuple[str, int], ...]  # (which deployment, capacity units of 1,000 TPM) in the pool
    batch_size: int
    new_batch_threshold: int
    tokens_per_call: int
    seconds_per_call: int
    override: int  # MAXIMUM_INSTANCE_COUNT; 0: derive

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], capacities: tuple[tuple[str, int], ...], host_json: Path = HOST_JSON
    ) -> Sizing:
        batch, threshold = host_concurrency(host_json)
        return cls(
            capacities=capacities,
            batch_size=batch,
            new_batch_threshold=threshold,
            tokens_per_call=_whole(env, "EXPECTED_TOKENS_PER_CALL", 1),
            seconds_per_call=_whole(env, "EXPECTED_SECONDS_PER_CALL", 1),
            override=_whole(env, "MAXIMUM_INSTANCE_COUNT", 0, HIGHEST),
        )

    @property
    def slots(self) -> int:
        return self.batch_size + self.new_batch_threshold

    @property
    def tokens_per_minute(self) -> int:
        return sum(units for _, units in self.capacities) * 1000

    @property
    def instance_tokens_per_minute(self) -> float:
        """What one instance asks for with every slot busy."""
        return self.slots * SECONDS_PER_MINUTE / self.seconds_per_call * self.tokens_per_call

    @property
    def derived(self) -> int:
        """resources.bicep's derivedInstanceCap, in the same integer arithmetic."""
        per_instance = self.slots * SECONDS_PER_MINUTE * self.tokens_per_call  # x seconds per call
        return min(HIGHEST, max(LOWEST, ceil_div(self.tokens_per_minute * self.seconds_per_call, per_instance)))

    @property
    def count(self) -> int:
        return self.override or self.derived

    def line(self, lowest: int = LOWEST, highest: int = HIGHEST) -> str:
        """The pass line's part: the count and how it was reached; SizingError when Flex Consumption in
        the region would refuse it."""
        if not lowest <= self.count <= highest:
            raise SizingError(
                f"maximumInstanceCount {self.count} ({self._origin()}) is outside the {lowest} to {highest} Flex "
                f"Consumption takes in this region. Fix: azd env set MAXIMUM_INSTANCE_COUNT "
                f"{min(max(self.count, lowest), highest)}"
            )
        pool = " + ".join(f"{what} {units} units" for what, units in self.capacities)
        derivation = (
            f"the pool has {self.tokens_per_minute:,} TPM ({pool}); one instance's {self.slots} slots (host.json "
            f"batchSize {self.batch_size} + newBatchThreshold {self.new_batch_threshold}) of "
            f"{self.tokens_per_call:,}-token calls lasting {self.seconds_per_call} s ask for "
            f"{self.instance_tokens_per_minute:,.0f} TPM: ceil({self.tokens_per_minute:,} / "
            f"{self.instance_tokens_per_minute:,.0f}) = {self.derived}"
        )
        if not self.override:
            return (
                f"maximumInstanceCount = {self.count}: {derivation}. Override: azd env set MAXIMUM_INSTANCE_COUNT <n>; "
                "size it for your jobs: EXPECTED_TOKENS_PER_CALL, EXPECTED_SECONDS_PER_CALL"
            )
        beyond = (
            f"; instances past {self.derived} only wait in the pacing gate or meet 429s"
            if self.override > self.derived
            else ""
        )
        return (
            f"maximumInstanceCount = {self.count}: {self._origin()} (derived from the quota it would be "
            f"{self.derived}: {derivation}{beyond}). azd env set MAXIMUM_INSTANCE_COUNT 0 derives it"
        )

    def _origin(self) -> str:
        return "set by MAXIMUM_INSTANCE_COUNT" if self.override else "derived from the quota"


def flex_limits(listing: Any, version: str) -> tuple[int, int]:
    """(lowest, highest) maximumInstanceCount Flex Consumption takes for this Python version, from
    `az functionapp list-flexconsumption-runtimes`: sku.maximumInstanceCount.{lowest,highest}MaximumInstanceCount
    of the Function App Stacks API's FC1 entry. (LOWEST, HIGHEST) when the listing does not say."""
    for entry in listing if isinstance(listing, list) else []:
        if not isinstance(entry, dict):
            continue
        sku = entry.get("sku") or {}
        runtime = (sku.get("functionAppConfigProperties") or {}).get("runtime") or {}
        if str(runtime.get("version") or entry.get("version") or "") != version:
            continue
        limits = sku.get("maximumInstanceCount") or {}
        lowest, highest = limits.get("lowestMaximumInstanceCount"), limits.get("highestMaximumInstanceCount")
        return (
            int(lowest) if isinstance(lowest, int | float) and lowest >= 1 else LOWEST,
            int(highest) if isinstance(highest, int | float) and highest >= 1 else HIGHEST,
        )
    return LOWEST, HIGHEST
