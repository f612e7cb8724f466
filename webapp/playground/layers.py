"""The channel layer of deployments: channels-redis' pub/sub layer with bounded channel queues.

Measured (``benchmarks/stream_latency.py``, 50 streams x 20 events/s on the 2-core VM): the core
layer's ``group_send`` costs three Redis round trips and saturated at about 800 events/s, with
p50 latencies of seconds; the pub/sub layer's is one PUBLISH. But its per-channel queues are
unbounded: a consumer that cannot keep up with its browser would grow them without limit. Here
each queue holds at most ``capacity`` messages; past that, new ones are dropped (and counted),
and the consumer fills the gap from the database (drop-and-backfill, see ``consumers``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer, _wrap_close

log = logging.getLogger(__name__)


class DroppingQueue(asyncio.Queue[Any]):
    """An asyncio queue whose ``put_nowait`` drops the message when full instead of raising."""

    dropped = 0

    def put_nowait(self, item: Any) -> None:
        if self.full():
            DroppingQueue.dropped += 1
            if DroppingQueue.dropped % 1000 == 1:
                log.warning("playground.channel_full_dropping", extra={"dropped": DroppingQueue.dropped})
            return
        super().put_nowait(item)


class _BoundedLoopLayer(RedisPubSubLoopLayer):  # type: ignore[misc]
    def __init__(self, *args: Any, capacity: int = 1000, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capacity = capacity

    async def _subscribe_to_channel(self, channel: str) -> None:
        self.channels[channel] = DroppingQueue(maxsize=self.capacity)
        await self._get_shard(channel).subscribe(channel)


class BoundedRedisPubSubChannelLayer(RedisPubSubChannelLayer):  # type: ignore[misc]
    """``RedisPubSubChannelLayer`` whose channels hold at most ``capacity`` messages."""

    def __init__(self, *args: Any, capacity: int = 1000, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capacity = capacity

    def _get_layer(self) -> Any:
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = _BoundedLoopLayer(*self._args, **self._kwargs, capacity=self.capacity, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
        return layer
