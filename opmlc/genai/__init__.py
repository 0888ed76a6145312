"""onnxruntime-genai models: their folder's configuration (config.py), text generation over a
compiled decoding step (generate.py) and the tokenizer (tokenizer.py). docs/DESIGN.md
"Generation: onnxruntime-genai models, decoding steps, disputes"."""
