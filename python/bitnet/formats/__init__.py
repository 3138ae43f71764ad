"""Model files: GGUF reading and writing (``gguf``), ternary bit layouts (``ternary``),
conversions between layouts (``convert``), Hugging Face checkpoints (``hf``) and the file cache
(``cache``).

Dependencies point one way: ``bitnet.Model`` uses this package (to read metadata and to run
bitnet.cpp's I2_S files through a cached conversion); nothing here imports the model, the
runtime, the server or the command line.
"""
