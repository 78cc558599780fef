"""The bucket's half of the standby contract (`StandbyCopy`): keep (incremental sync), lag, promote (check the
standby bucket against the manifest), loss."""

from __future__ import annotations


class BucketStandby:
    pass
