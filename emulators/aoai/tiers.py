"""``service_tier`` on both APIs (facts-api-surface.md section 4): which tier serves a request, the tier's refusals,
and its price for the bench's cost figures.

A request names ``auto`` (or nothing: the deployment's own ``Deployment.service_tier``), ``default``, ``priority``
or ``flex`` in its body; the ``x-ms-service-tier`` header overrides the body, and ``auto`` there means priority.
Anything else (body or header) is a 400, with no fallback. Flex is served only for the catalogue's flex models
(``catalogue.supports_flex``; 400 otherwise, no fallback, as since 2026-09-25), and while the deployment's
``flex_unavailable_until`` is in the future a flex request gets ``FLEX_UNAVAILABLE`` (429, not billed, no
``retry-after``). The answer echoes the tier used (``default|priority|flex``). All tiers share one quota.

Not modelled: priority's model and SKU list and its downgrades to default (a ramp, peak demand, long prompts); the
SKU (flex needs Global Standard: every emulated deployment is taken to be one); flex's 408 timeout.
Our assumptions (unconfirmed): the flex 429's code and text (``FLEX_UNAVAILABLE``), the wording and codes of the
400s below, and priority's price (OpenAI's ~2x).
"""

from __future__ import annotations

from typing import Any

from emulators.aoai import models
from emulators.aoai.config import Deployment
from shared.catalogue import supports_flex

REQUEST_TIERS = ("auto", "default", "flex", "priority")
HEADER = "x-ms-service-tier"
HEADER_TIERS = {"auto": "priority", "default": "default", "flex": "flex", "priority": "priority"}
PRICE = {"default": 1.0, "flex": 0.5, "priority": 2.0}  # x the Standard price; priority's is assumed
FLEX_UNAVAILABLE = {
    "error": {
        "code": "ResourceUnavailable",
        "message": "Flex processing capacity is temporarily unavailable for this deployment. Retry later or resend "
        "with service_tier 'default'.",
    }
}


def resolve(requested: Any, header: str | None, spec: Deployment) -> str | dict[str, Any]:
    """The tier that serves the request (``default|priority|flex``), or the 400 body refusing it."""
    if header is not None:
        if header.strip().lower() not in HEADER_TIERS:
            message = (
                f"Invalid value: '{header}' for header '{HEADER}'. Supported values are: "
                f"{models.listed(sorted(HEADER_TIERS))}."
            )
            return models.param_error("invalid_value", HEADER, message)
        tier = HEADER_TIERS[header.strip().lower()]
    elif requested is None or requested == "auto":
        tier = spec.service_tier
    elif isinstance(requested, str) and requested in REQUEST_TIERS:
        tier = requested
    else:
        message = (
            f"Invalid value: '{models.format_value(requested)}'. Supported values are: {models.listed(REQUEST_TIERS)}."
        )
        return models.param_error("invalid_value", "service_tier", message)
    if tier == "flex" and not supports_flex(spec.model):
        message = (
            f"Flex processing is not supported for the model '{spec.model}' of this deployment. Resend without "
            "service_tier 'flex'."
        )
        return models.param_error("unsupported_value", "service_tier", message)
    return tier


def flex_unavailable(spec: Deployment, tier: str, now: float) -> bool:
    """Whether a request on ``tier`` meets the deployment's flex capacity gap right now."""
    return tier == "flex" and spec.flex_unavailable_until is not None and now < spec.flex_unavailable_until
