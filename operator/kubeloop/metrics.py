"""Every Prometheus metric kubeloop exports, in one place.

Label sets are bounded (kinds, protocols, reasons, slices, versions of one model); names
end in _total, _seconds or _bytes as Prometheus expects.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# --- operator ---------------------------------------------------------------------------

# --- predictor --------------------------------------------------------------------------

__all__ = ["Counter", "Gauge", "Histogram"]
