"""Speech to text, and the finalization of conversations.

* :mod:`transcription.base` - the :class:`~transcription.base.Transcriber` protocol and its result;
* :mod:`transcription.errors` - permanent (the chunk fails) vs transient (retried) errors;
* :mod:`transcription.openai_provider`, :mod:`transcription.local_provider` - the providers
  ``TRANSCRIBER=openai`` (any OpenAI-compatible ``/v1/audio/transcriptions``) and
  ``TRANSCRIBER=local`` (faster-whisper in this process);
* :mod:`transcription.bound` - per-process and cluster-wide bounds on provider calls;
* :mod:`transcription.fetch` - the chunk's object from S3 into a bounded temporary file;
* :mod:`transcription.consumer` - the ``transcription`` consumer group;
* :mod:`transcription.finalization` - merge once per conversation generation, write
  ``transcript.json`` / ``transcript.txt``, request the summary;
* :mod:`transcription.status` - chunk counts and output locations for the API;
* :mod:`transcription.lifecycle` - the per-process service and the group's spec, built from
  explicit clients (the gateway's ``transcription_ctx`` owns the service).
"""
