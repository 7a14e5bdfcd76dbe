# Pillow 12 and earlier always resize horizontally first; Pillow 13 runs the vertical pass first when the height
# shrinks by more than twice as many pixels as the width. Run with Pillow 12.x (12.3.0 here) after make_fixtures.py:
# resizes of pre_src_31x203.rgb whose bytes differ between the two versions.
import json
from PIL import Image
src = Image.frombytes("RGB", (31, 203), open("pre_src_31x203.rgb", "rb").read())
cases = []
for (w, h) in [(14, 64), (9, 40), (30, 20)]:
    name = f"pillow12_resize_31x203_to_{w}x{h}.rgb"
    open(name, "wb").write(src.resize((w, h), Image.BICUBIC).tobytes())
    cases.append({"source": "pre_src_31x203.rgb", "width": 31, "height": 203, "to_width": w, "to_height": h, "file": name})
json.dump({"pillow": Image.__version__ if hasattr(Image, "__version__") else "12", "resize": cases}, open("pillow12.json", "w"), indent=1)
