# Reference images and decodes made with Pillow (PYTHONPATH=<pillow> python3 make_fixtures.py).
# Each input comes with the bytes Pillow's convert("RGB") gives for it (.rgb), and resize cases with Pillow's
# BICUBIC output (.rgb). The Swift tests compare against these files.
import json, random
from PIL import Image
random.seed(7)
def rand_image(w, h, mode="RGB"):
    im = Image.new(mode, (w, h))
    im.putdata([tuple(random.randrange(256) for _ in range(len(mode))) if len(mode) > 1 else random.randrange(256) for _ in range(w * h)])
    return im
def save(im, name, **kw):
    im.save(name, **kw)
    ref = Image.open(name).convert("RGB")
    open(name + ".rgb", "wb").write(ref.tobytes())
    return {"file": name, "width": ref.width, "height": ref.height}
cases = []
base = rand_image(13, 9)
cases.append(save(base, "rgb.png"))
cases.append(save(base.convert("P", palette=Image.ADAPTIVE, colors=16), "palette.png"))
cases.append(save(base.convert("L"), "gray.png"))
cases.append(save(base.convert("1"), "bilevel.png"))
rgba = rand_image(11, 7, "RGBA"); cases.append(save(rgba, "rgba.png"))
la = base.convert("LA"); cases.append(save(la, "gray_alpha.png"))
i16 = Image.new("I;16", (5, 4)); i16.putdata([random.randrange(65536) for _ in range(20)]); cases.append(save(i16, "gray16.png"))
smooth = Image.linear_gradient("L").resize((40, 24)).convert("RGB")
cases.append(save(smooth, "photo.jpg", quality=90))
resize = []
src = rand_image(45, 29); open("resize_src.rgb", "wb").write(src.tobytes())
for (w, h) in [(64, 41), (20, 13), (45, 64), (7, 29), (64, 64), (45, 10)]:
    out = src.resize((w, h), Image.BICUBIC)
    name = f"resize_{w}x{h}.rgb"; open(name, "wb").write(out.tobytes())
    resize.append({"file": name, "width": w, "height": h})
json.dump({"decode": cases, "resize_source": {"file": "resize_src.rgb", "width": 45, "height": 29}, "resize": resize,
           "pillow": Image.__version__ if hasattr(Image, "__version__") else "13"}, open("index.json", "w"), indent=1)
