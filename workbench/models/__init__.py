"""The model families behind one surface (`base.AudioLM`), and what loads them."""
