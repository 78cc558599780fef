"""The bucket dataset kind (stack file: `data.buckets.<key>`): objects copied by the movers' manifest-driven sync.

Live move, verification and drills here; keeping a standby and using it in `bucket_standby`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from liferaft.datasets.bucket_standby import BucketStandby


class Bucket(BucketStandby):
    name: ClassVar[str] = "bucket"
    noun: ClassVar[str] = "bucket"

    def entries(self, model: Any) -> dict[str, Any]:
        return dict(model.data.buckets)
