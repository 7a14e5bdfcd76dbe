# Copies the preprocessing tensors of the project's reference fixture (shared/fixtures/tiny/io.safetensors, made with
# DeepSeek's official VLMImageProcessor at image_size 64, mean = std = 0.5) into preprocess.safetensors, unchanged:
# same names, dtypes, shapes and data bytes. Usage: python3 make_preprocess_fixture.py PATH/TO/io.safetensors
import json, struct, sys
NAMES = ["pre.image_u8.0", "pre.pixel_values.0", "pre.image_u8.1", "pre.pixel_values.1", "und.image_u8", "und.prompt_pixel_values"]
blob = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", blob[:8])[0]
header = json.loads(blob[8:8 + n])
data = blob[8 + n:]
out_header, chunks, offset = {"__metadata__": {"source": "shared/fixtures/tiny/io.safetensors (JanusFlow reference fixture 'tiny')"}}, [], 0
for name in NAMES:
    entry = header[name]
    start, end = entry["data_offsets"]
    chunks.append(data[start:end])
    out_header[name] = {"dtype": entry["dtype"], "shape": entry["shape"], "data_offsets": [offset, offset + end - start]}
    offset += end - start
text = json.dumps(out_header, separators=(",", ":")).encode()
text += b" " * (-len(text) % 8)
open("preprocess.safetensors", "wb").write(struct.pack("<Q", len(text)) + text + b"".join(chunks))
