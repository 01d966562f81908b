"""The LLM layer: one Anthropic client per process behind a cluster-wide bound.

* :mod:`storage.permits` (used by :mod:`llm.client`) - at most ``LLM_MAX_CONCURRENT_CALLS``
  model calls in flight across every process (leases in Redis, FIFO waiters) and the shared
  "pause until" a 429/529 sets;
* :mod:`llm.client` - :class:`~llm.client.BoundedLlm`, our single retry loop around one
  provider attempt; it never sleeps while it holds a permit;
* :mod:`llm.providers` - the Anthropic provider and the offline provider used
  without ``ANTHROPIC_API_KEY``;
* :mod:`llm.selection`, :mod:`llm.summary` - the prompts, strict parsing and merging;
* :mod:`llm.jobs`, :mod:`llm.handlers`, :mod:`llm.lifecycle` - auto-select jobs, the ``llm``
  group's handlers and the per-process service (its routes are ``gateway.auto_select``).
"""
