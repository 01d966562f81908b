"""The objects the participant and host API share, built once per process from the app's clients."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from config import Settings
from storage.conversations import ConversationStore
from storage.presence import PresenceStore
from storage.ratelimit import RateLimitMetrics, SlidingWindowLimiter
from storage.redis_autopipeline import AutoPipeline
from storage.redis_client import RedisClient
from storage.s3_client import S3Client
from storage.uploads import PostPresigner
from streams.publisher import Publisher


class ApiMetrics:
    """Counters of the participant API's outcomes (uploads confirmed, pending, failed...)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.confirmations = Counter(
            "echo_upload_confirmations",
            "confirm-upload and upload-chunk outcomes (confirmed, pending_verification, repeated)",
            ["outcome"],
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class ApiServices:
    settings: Settings
    store: ConversationStore
    publisher: Publisher
    upload_url_limiter: SlidingWindowLimiter
    initiate_limiter: SlidingWindowLimiter
    ping_limiter: SlidingWindowLimiter
    #: The last ping of each conversation and visitor (the host's live view).
    presence: PresenceStore
    #: The client used for data (HEAD, PUT, multipart).
    s3: S3Client
    #: The client whose endpoint browsers reach; presigned URLs are signed with it.
    s3_presign: S3Client
    #: Presigned POSTs signed with ``s3_presign`` (endpoint resolved once per bucket).
    presigner: PostPresigner
    metrics: ApiMetrics
    #: The process's auto-pipelined connection (None on Cluster or when turned off).
    autopipeline: AutoPipeline | None = None

    @classmethod
    def build(
        cls, settings: Settings, redis: RedisClient, s3: S3Client, s3_presign: S3Client,
        registry: CollectorRegistry, publisher: Publisher,
        autopipeline: AutoPipeline | None = None,
    ) -> ApiServices:
        """``autopipeline``, when given, carries the store's scripts and the limiters' checks."""
        prefix = settings.redis_key_prefix
        rl_metrics = RateLimitMetrics(registry)
        store = ConversationStore(redis, key_prefix=prefix, autopipeline=autopipeline)
        return cls(
            settings=settings,
            store=store,
            publisher=publisher,
            upload_url_limiter=SlidingWindowLimiter(
                redis, name="upload-url", limit=settings.upload_url_limit_per_window,
                window_s=settings.upload_url_limit_window_s, key_prefix=prefix, metrics=rl_metrics,
                autopipeline=autopipeline,
                # beside the conversation, so get-upload-url is one script (see the store)
                key_fn=lambda cid: store.conversation_limit_key(cid, "upload-url"),
            ),
            initiate_limiter=SlidingWindowLimiter(
                redis, name="initiate", limit=settings.initiate_limit_per_window,
                window_s=settings.initiate_limit_window_s, key_prefix=prefix, metrics=rl_metrics,
                autopipeline=autopipeline,
            ),
            ping_limiter=SlidingWindowLimiter(
                redis, name="ping", limit=settings.ping_limit_per_window,
                window_s=settings.ping_limit_window_s, key_prefix=prefix, metrics=rl_metrics,
                autopipeline=autopipeline,
            ),
            presence=PresenceStore(redis, key_prefix=prefix, ttl_s=settings.ping_ttl_s),
            s3=s3,
            s3_presign=s3_presign,
            presigner=PostPresigner(s3_presign),
            metrics=ApiMetrics(registry),
            autopipeline=autopipeline,
        )
