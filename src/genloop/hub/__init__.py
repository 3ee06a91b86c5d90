"""Models in and out of genloop in the formats others speak.

``imports.py``   a Hugging Face directory (or a Hub repository, pinned) → a registered version
``encoders.py``  BERT-family encoder checkpoints → the ``embedder`` family
``export.py``    a genloop ``gpt`` → a transformers directory that ``from_pretrained`` loads
``onnx.py``      a version → an ONNX decoder with a KV cache, fp32 or int8, run by onnxruntime

This layer sits above the store (it registers versions) and below generation (which loads the
variants it writes). transformers, peft and onnxruntime are optional extras (``genloop[hf]``,
``genloop[onnx]``), imported inside the functions that need them.
"""
