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
# More decodes: PNGs of every colour type and bit depth written by hand (Pillow cannot write most of them), with and
# without tRNS, interlaced ones, and JPEGs in grey, CMYK, 4:4:4, progressive and odd sizes. Expected bytes as above.
import struct, zlib
def png_bytes(w, h, color_type, depth, samples, palette=None, trns=None, interlace=False):
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    def pack_row(row):  # row: flat list of samples
        if depth == 16: return b"".join(struct.pack(">H", v) for v in row)
        if depth == 8: return bytes(row)
        per = 8 // depth; out = bytearray()
        for i in range(0, len(row), per):
            byte = 0
            for j in range(per):
                v = row[i + j] if i + j < len(row) else 0
                byte |= v << (8 - depth * (j + 1))
            out.append(byte)
        return bytes(out)
    def pixel(x, y): return samples[(y * w + x) * channels:(y * w + x + 1) * channels]
    raw = bytearray()
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)] if interlace else [(0, 0, 1, 1)]
    for (x0, y0, dx, dy) in passes:
        xs = list(range(x0, w, dx)); ys = list(range(y0, h, dy))
        if not xs or not ys: continue
        for y in ys:
            raw += b"\0" + pack_row([v for x in xs for v in pixel(x, y)])
    def chunk(tag, data): return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1 if interlace else 0))
    if palette is not None: out += chunk(b"PLTE", bytes(v for rgb in palette for v in rgb))
    if trns is not None: out += chunk(b"tRNS", trns)
    return out + chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + chunk(b"IEND", b"")
def save_png(name, w, h, color_type, depth, **kw):
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    top = (1 << depth) - 1
    if color_type == 3: top = len(kw["palette"]) - 1
    samples = [random.randint(0, top) for _ in range(w * h * channels)]
    if depth == 16:  # some small values too, so clipping and byte order both show
        samples = [v if i % 3 else v % 300 for i, v in enumerate(samples)]
    open(name, "wb").write(png_bytes(w, h, color_type, depth, samples, **kw))
    ref = Image.open(name).convert("RGB")
    open(name + ".rgb", "wb").write(ref.tobytes())
    return {"file": name, "width": ref.width, "height": ref.height}
def pal(n): return [(random.randrange(256), random.randrange(256), random.randrange(256)) for _ in range(n)]
for d in (1, 2, 4, 16): cases.append(save_png(f"gray{d}_hand.png", 7, 5, 0, d))
cases.append(save_png("gray8_trns.png", 7, 5, 0, 8, trns=struct.pack(">H", 17)))
cases.append(save_png("gray16_trns.png", 7, 5, 0, 16, trns=struct.pack(">H", 300)))
cases.append(save_png("rgb16.png", 7, 5, 2, 16))
cases.append(save_png("rgb8_trns.png", 7, 5, 2, 8, trns=struct.pack(">HHH", 1, 2, 3)))
for d in (1, 2, 4): cases.append(save_png(f"palette{d}.png", 7, 5, 3, d, palette=pal(1 << d)))
cases.append(save_png("palette8_trns.png", 7, 5, 3, 8, palette=pal(200), trns=bytes(range(0, 250, 2))))
cases.append(save_png("gray_alpha16.png", 7, 5, 4, 16))
cases.append(save_png("rgba16.png", 7, 5, 6, 16))
cases.append(save_png("rgb8_interlaced.png", 11, 9, 2, 8, interlace=True))
cases.append(save_png("palette4_interlaced.png", 11, 9, 3, 4, palette=pal(16), interlace=True))
cases.append(save_png("gray16_interlaced.png", 11, 9, 0, 16, interlace=True))
cases.append(save_png("rgba8_interlaced.png", 11, 9, 6, 8, interlace=True))
smooth = Image.linear_gradient("L").resize((13, 9)).convert("RGB")
noisy = rand_image(13, 9)
cases.append(save(Image.blend(smooth, noisy, 0.3), "odd420.jpg", quality=85))
cases.append(save(Image.blend(smooth, noisy, 0.3), "rgb444.jpg", quality=92, subsampling=0))
cases.append(save(Image.blend(smooth, noisy, 0.3).resize((21, 17)), "progressive.jpg", quality=80, progressive=True))
cases.append(save(Image.blend(smooth, noisy, 0.3).convert("L"), "gray.jpg", quality=90))
cases.append(save(rand_image(9, 7, "CMYK"), "cmyk.jpg", quality=90))
# The official preprocessing's 8-bit stage (resize the long side to `size` with BICUBIC, short side
# max(int(short / long * size), 14), paste centred on a (127, 127, 127) square) for shrinking and extreme shapes.
preprocess = []
for (w, h, size) in [(150, 97, 64), (31, 203, 64), (200, 9, 64), (61, 61, 48)]:
    src = rand_image(w, h); name = f"pre_src_{w}x{h}.rgb"; open(name, "wb").write(src.tobytes())
    long = max(w, h); nw = max(int(w / long * size), 14); nh = max(int(h / long * size), 14)
    resized = src.resize((nw, nh), Image.BICUBIC)
    side = max(nw, nh); canvas = Image.new("RGB", (side, side), (127, 127, 127))
    canvas.paste(resized, ((side - nw) // 2, (side - nh) // 2))
    out = f"pre_square_{w}x{h}_{size}.rgb"; open(out, "wb").write(canvas.tobytes())
    preprocess.append({"source": name, "width": w, "height": h, "size": size, "square": out, "side": side})
json.dump({"decode": cases, "resize_source": {"file": "resize_src.rgb", "width": 45, "height": 29}, "resize": resize, "preprocess": preprocess,
           "pillow": Image.__version__ if hasattr(Image, "__version__") else "13"}, open("index.json", "w"), indent=1)
