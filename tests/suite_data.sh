#!/usr/bin/env bash
# The user's own data (issue 18): CSV files and image folders (PNG, JPEG) made here,
# read by the runtime (build/tools/data_dump) and compared with a numpy/PIL/torch
# reference; augmentation reproducible by seed and really cropping and flipping; specs
# that train end to end on them (the CUDA program too, emulated); bad input refused in one
# line naming the file (and row).
set -u
LOOM=${LOOM:-build/loom}
DUMP=${DUMP:-build/tools/data_dump}
PY=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$(dirname "$0")/tap.sh"
plan 26
CASES=("csv columns by name match numpy" "csv without header by index match numpy" "csv spec trains (class names, val_split)"
  "csv regression spec trains (val file, header = false)" "csv missing file" "csv missing column" "csv non-numeric cell"
  "csv wrong number of fields" "csv unknown class name" "csv classes other than the model's is a spec error"
  "csv too few rows for the validation split"
  "images RGB match PIL + torch Resize" "images gray match PIL + torch Resize" "image labels are sorted class folders"
  "augmentation reproducible by seed and epoch" "augmentation crops and flips" "image spec trains (augmented, val file)"
  "image spec resumed mid-epoch is bit-exact (augmented, prefetched)"
  "corrupt JPEG names the file" "corrupt PNG names the file" "unsupported image format names the file"
  "val folder with other classes" "imagefolder mean per channel is a spec error" "cuda program accepts image folders"
  "cuda program trains on an image folder (emulated)" "only image-folder programs carry images.c and link libpng/libjpeg")
if py_lacks numpy || ! "$PY" -c "import PIL" 2>/dev/null; then
  for t in "${CASES[@]}"; do skip "$t" "no numpy or PIL (python3-pil) for $PY"; done
  exit 0
fi

# trains_to CASE SPEC BUILD RUN METRIC BOUND: `loom train $work/SPEC.lua` (built in
# $work/BUILD, run in $work/RUN) must end with METRIC's last printed value BOUND (e.g. "> 0.85")
trains_to() {
  if ! "$LOOM" train "$work/$2.lua" -o "$work/$3" -- --out "$work/$4" >"$work/log" 2>&1; then
    fail "$1" "$(tail -1 "$work/log")"
    return
  fi
  local v
  v=$(grep -o "$5 [0-9.e-]*" "$work/log" | tail -1 | cut -d' ' -f2)
  if [ -n "$v" ] && awk "BEGIN { exit !($v $6) }"; then ok "$1 ($5 $v)"; else fail "$1" "$5 ${v:-not printed}"; fi
}

# ---------------------------------------------------------------------------- CSV
"$PY" - "$work" <<'PYEOF'
import sys, os, numpy as np
w = sys.argv[1]
rng = np.random.default_rng(0)
n = 240
x = rng.normal(size=(n, 4)).astype(np.float32)
y = (x[:, 0] + x[:, 2] > 0).astype(int) + (x[:, 1] > 0.8).astype(int)
names = np.array(["setosa", "versicolor", "virginica"])
os.makedirs(f"{w}/csv")
with open(f"{w}/csv/iris.csv", "w") as f:   # quoted header, CRLF lines, a blank line, spaces around numbers
    f.write('id;"sepal length";b;c;d;species\r\n')
    for i in range(n):
        f.write(f"{i}; {x[i,0]:.6g};{x[i,1]:.6g};{x[i,2]:.6g};{x[i,3]:.6g};{y[i]}\r\n")
        if i == 7: f.write("\r\n")
with open(f"{w}/csv/named.csv", "w") as f:
    f.write("a,b,c,d,species\n")
    for i in range(n): f.write(f"{x[i,0]:.6g},{x[i,1]:.6g},{x[i,2]:.6g},{x[i,3]:.6g},{names[y[i]]}\n")
t = x @ np.array([0.5, -1.0, 2.0, 0.25], np.float32) + 0.1
for name, rows in (("reg.csv", range(200)), ("reg_val.csv", range(200, n))):
    with open(f"{w}/csv/{name}", "w") as f:
        for i in rows: f.write(f"{x[i,0]:.6g}\t{x[i,1]:.6g}\t{x[i,2]:.6g}\t{x[i,3]:.6g}\t{t[i]:.6g}\n")
# bad inputs, each a named.csv in its own folder (the program's --data DIR)
bad = {"nocol": "a,b,c,species\n1,2,3,setosa\n", "nonnum": "a,b,c,d,species\n1,2,3,4,setosa\n1,2,x7,4,setosa\n",
       "fields": "a,b,c,d,species\n1,2,3,4,setosa\n1,2,3,4\n", "cls": "a,b,c,d,species\n1,2,3,4,setosa\n1,2,3,4,rose\n",
       "one": "a,b,c,d,species\n1,2,3,4,setosa\n"}
for k, v in bad.items():
    os.makedirs(f"{w}/{k}"); open(f"{w}/{k}/named.csv", "w").write(v)
os.makedirs(f"{w}/missing")
PYEOF
mkdir -p "$work/d1" "$work/d2"
check_csv() {   # OUT NUMPY_EXPR: data_dump's x/target against numpy's reading
  "$PY" - "$work" "$1" "$2" <<'PYEOF'
import sys, numpy as np
w, out, expr = sys.argv[1:]
exec(expr)   # sets want_x, want_t
gx, gt = np.load(f"{w}/{out}/x.npy"), np.load(f"{w}/{out}/target.npy")
assert gx.dtype == np.float32 and gx.shape == want_x.shape, (gx.dtype, gx.shape, want_x.shape)
assert (gx == want_x).all(), np.abs(gx - want_x).max()
assert (gt == want_t).all() and gt.dtype == want_t.dtype, (gt[:5], want_t[:5])
PYEOF
}
if err=$("$DUMP" csv "$work/d1" "$work/csv/iris.csv" ';' 1 3 species d "sepal length" b 2>&1) &&
   err=$(check_csv d1 'a = np.genfromtxt(f"{w}/csv/iris.csv", delimiter=";", skip_header=1, dtype=np.float64)
want_x = a[:, [4, 1, 2]].astype(np.float32); want_t = a[:, 5].astype(np.int64)' 2>&1); then ok "${CASES[0]}"
else fail "${CASES[0]}" "$(echo "$err" | tail -1)"; fi
if err=$("$DUMP" csv "$work/d2" "$work/csv/reg.csv" t 0 0 '#4' '#3' '#0' 2>&1) &&
   err=$(check_csv d2 'a = np.loadtxt(f"{w}/csv/reg.csv", delimiter="\t", dtype=np.float64)
want_x = a[:, [3, 0]].astype(np.float32); want_t = a[:, 4:5].astype(np.float32)' 2>&1); then ok "${CASES[1]}"
else fail "${CASES[1]}" "$(echo "$err" | tail -1)"; fi

cat >"$work/csv_mlp.lua" <<LUAEOF
model "CsvMLP" {
  inputs = { x = Tensor{4} },
  net = Sequential { Linear(4, 32), ReLU(), Linear(32, 3) },
  forward = function(m, b) return m.net(b.x) end,
}
fabric { accelerator = "cpu" }
train {
  data = CSV { train = "$work/csv/named.csv", columns = { "a", "b", "c", "d" }, target = "species",
               classes = { "setosa", "versicolor", "virginica" }, val_split = 0.25 },
  batch_size = 16,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = Adam { lr = 0.02 },
  epochs = 12,
}
LUAEOF
trains_to "${CASES[2]}" csv_mlp bc rc "val/acc" "> 0.85"
cat >"$work/csv_reg.lua" <<LUAEOF
model "CsvReg" {
  inputs = { x = Tensor{4} },
  net = Linear(4, 1),
  forward = function(m, b) return m.net(b.x) end,
}
fabric { accelerator = "cpu" }
train {
  data = CSV { train = "$work/csv/reg.csv", val = "$work/csv/reg_val.csv", delimiter = "\t", header = false,
               columns = { 0, 1, 2, 3 }, target = 4 },
  batch_size = 20,
  loss = function(m, b) return mse_loss(m(b), b.target) end,
  optimizer = SGD { lr = 0.05 },
  epochs = 15,
}
LUAEOF
trains_to "${CASES[3]}" csv_reg br rr "val/loss" "< 0.01"
T="$work/bc/train"
expect_error "${CASES[4]}" "missing/named.csv: cannot open: No such file" "$T" --data "$work/missing" --out "$work/o"
expect_error "${CASES[5]}" "nocol/named.csv:1: no column 'd' in the header (it has 'a', 'b', 'c', 'species')" "$T" --data "$work/nocol" --out "$work/o"
expect_error "${CASES[6]}" "nonnum/named.csv:3: column 'c': 'x7' is not a number" "$T" --data "$work/nonnum" --out "$work/o"
expect_error "${CASES[7]}" "fields/named.csv:3: 4 fields, but the header has 5" "$T" --data "$work/fields" --out "$work/o"
expect_error "${CASES[8]}" "cls/named.csv:3: column 'species': 'rose' is not one of the 3 class names" "$T" --data "$work/cls" --out "$work/o"
expect_error "${CASES[10]}" "one/named.csv: dataset: a validation split of 1 samples must be in 1..0 (the dataset has 1)" "$T" --data "$work/one" --out "$work/o"
sed 's/classes = { "setosa", "versicolor", "virginica" }/classes = 4/' "$work/csv_mlp.lua" >"$work/csv_bad.lua"
err=$("$LOOM" build "$work/csv_bad.lua" -o "$work/bb" 2>&1); rc=$?
case "$rc:$err" in [12]:*"csv_bad.lua:9"*"CSV: classes = 4, but the model's cross_entropy scores 3 classes"*) ok "${CASES[9]}" ;;
  *) fail "${CASES[9]}" "exit $rc: $err" ;; esac

# ---------------------------------------------------------------------------- images
"$PY" - "$work" <<'PYEOF'
import sys, os, numpy as np
from PIL import Image
w = sys.argv[1]
rng = np.random.default_rng(1)
for root, n in (("imgs", 30), ("imgs_val", 6)):
    for cls in ("zebra", "cat", "dog"):   # classes sorted by name: cat 0, dog 1, zebra 2
        os.makedirs(f"{w}/{root}/{cls}")
        for i in range(n):
            h, wd = rng.integers(10, 30, 2)
            a = rng.integers(0, 90, (h, wd, 3)).astype(np.uint8)
            if cls == "dog": a[: h // 2] += 150
            elif cls == "cat": a[h // 2:] += 150
            else: a[:, : wd // 2, 2] += 160
            p = f"{w}/{root}/{cls}/{i:03d}"
            if i % 4 == 0: Image.fromarray(a).save(p + ".jpg", quality=90)
            elif i % 4 == 1: Image.fromarray(a).convert("L").save(p + ".JPEG")
            elif i % 4 == 2: Image.fromarray(a).convert("L").save(p + ".png")
            else: Image.fromarray(a).save(p + ".png")
        open(f"{w}/{root}/{cls}/notes.txt", "w").write("not an image: skipped as ImageFolder skips it\n")
os.makedirs(f"{w}/other/imgs/cat"); os.makedirs(f"{w}/other/imgs_val/bird")
for k in ("cat", "bird"):
    d = "imgs" if k == "cat" else "imgs_val"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(f"{w}/other/{d}/{k}/a.png")
# bad images, each in a folder named like the spec's root (the program's --data DIR)
good = open(f"{w}/imgs/cat/000.jpg", "rb").read()
for k in ("badjpg", "badpng", "bmp"):
    os.makedirs(f"{w}/{k}/imgs/cat"); os.makedirs(f"{w}/{k}/imgs_val/cat")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(f"{w}/{k}/imgs_val/cat/a.png")
open(f"{w}/badjpg/imgs/cat/broken.jpg", "wb").write(good[: len(good) // 2])
png = open(f"{w}/imgs/cat/003.png", "rb").read()
open(f"{w}/badpng/imgs/cat/broken.png", "wb").write(png[:40] + bytes(len(png) - 40))
Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(f"{w}/bmp/imgs/cat/old.bmp")
PYEOF
check_images() {   # OUT MODE H W MEAN STD
  "$PY" - "$work" "$@" <<'PYEOF'
import sys, os, numpy as np, torch
from PIL import Image
w, out, mode, H, W, mean, std = sys.argv[1:]
H, W, mean, std = int(H), int(W), float(mean), float(std)
xs, ys, root = [], [], f"{w}/imgs"
for ci, c in enumerate(sorted(os.listdir(root))):
    for f in sorted(os.listdir(f"{root}/{c}")):
        if not f.lower().endswith((".png", ".jpg", ".jpeg")): continue
        a = np.asarray(Image.open(f"{root}/{c}/{f}").convert(mode))
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        # torchvision's Resize((H, W), antialias=False) on a uint8 tensor image, then /255, Normalize
        r = torch.nn.functional.interpolate(torch.from_numpy(a.copy()).float()[None], size=(H, W), mode="bilinear",
                                            align_corners=False)[0].round().clamp(0, 255).numpy()
        xs.append(r); ys.append(ci)
ref = np.stack(xs); got = np.load(f"{w}/{out}/image.npy") * std + mean
levels = np.abs(np.round(got * 255) - ref)
assert np.abs(got * 255 - np.round(got * 255)).max() < 1e-3, "not whole levels"
frac = (levels > 0).mean()
# float rounding at .5 ties (runtime/images.c): at most one level, on under 1% of the values
assert levels.max() <= 1 and frac < 0.01, (levels.max(), frac)
labels = np.load(f"{w}/{out}/label.npy")
assert (labels == np.array(ys)).all(), "labels"
print(f"{frac * 100:.2f}% of values one level off at .5 ties")
PYEOF
}
mkdir -p "$work/i1" "$work/i2"
if err=$("$DUMP" images "$work/i1" "$work/imgs" 3 16 20 0.5 0.25 2>&1) && err=$(check_images i1 RGB 16 20 0.5 0.25 2>&1); then ok "${CASES[11]} ($err)"
else fail "${CASES[11]}" "$(echo "$err" | tail -1)"; fi
if err=$("$DUMP" images "$work/i2" "$work/imgs" 1 12 12 0.2 0.5 2>&1) && err=$(check_images i2 L 12 12 0.2 0.5 2>&1); then ok "${CASES[12]} ($err)"
else fail "${CASES[12]}" "$(echo "$err" | tail -1)"; fi
if "$PY" -c "import numpy as np, sys; l = np.load(sys.argv[1]); assert l.dtype == np.int64 and (l == np.repeat([0, 1, 2], 30)).all()" "$work/i1/label.npy" 2>/dev/null
then ok "${CASES[13]}"; else fail "${CASES[13]}" "labels are not 30 each of cat 0, dog 1, zebra 2"; fi
mkdir -p "$work/a1" "$work/a2" "$work/a3"
dumped=1
"$DUMP" augment "$work/a1" "$work/imgs" 3 16 16 0.5 0.25 3 0.5 42 1 &&
"$DUMP" augment "$work/a2" "$work/imgs" 3 16 16 0.5 0.25 3 0.5 42 1 &&
"$DUMP" augment "$work/a3" "$work/imgs" 3 16 16 0.5 0.25 3 0.5 42 2 &&
"$DUMP" images "$work/i1" "$work/imgs" 3 16 16 0.5 0.25 || dumped=0
if [ $dumped = 1 ] && cmp -s "$work/a1/image.npy" "$work/a2/image.npy" && ! cmp -s "$work/a1/image.npy" "$work/a3/image.npy"; then ok "${CASES[14]}"
else fail "${CASES[14]}" "the same seed and epoch differ, or another epoch is the same"; fi
if err=$("$PY" - "$work" <<'PYEOF' 2>&1
import sys, numpy as np
w = sys.argv[1]
plain, aug = np.load(f"{w}/i1/image.npy"), np.load(f"{w}/a1/image.npy")
fill = (0 - 0.5) / 0.25   # a zero pixel, normalised: RandomCrop's padding
P = 3
flips = shifts = 0
for img, out in zip(plain, aug):
    padded = np.pad(img, ((0, 0), (P, P), (P, P)), constant_values=fill)
    found = None
    for top in range(2 * P + 1):
        for left in range(2 * P + 1):
            crop = padded[:, top:top + 16, left:left + 16]
            for flip in (0, 1):
                if np.array_equal(crop[:, :, ::-1] if flip else crop, out): found = (top, left, flip)
    assert found, "an augmented image is no crop of the padded image, flipped or not"
    flips += found[2]; shifts += found[:2] != (P, P)
n = len(plain)
assert 0.3 * n < flips < 0.7 * n, f"{flips} of {n} flipped with p = 0.5"
assert shifts > 0.7 * n, f"{shifts} of {n} shifted"
print(f"{flips} of {n} flipped, {shifts} shifted")
PYEOF
); then ok "${CASES[15]} ($err)"; else fail "${CASES[15]}" "$(echo "$err" | tail -1)"; fi

cat >"$work/img_cnn.lua" <<LUAEOF
model "ImgCNN" {
  inputs = { image = Tensor{3, 16, 16} },
  net = Sequential { Conv2d(3, 8, 3, {padding = 1}), ReLU(), MaxPool2d(2), Flatten(), Linear(512, 3) },
  forward = function(m, b) return m.net(b.image) end,
}
fabric { accelerator = "cpu" }
train {
  data = ImageFolder { root = "$work/imgs", val = "$work/imgs_val", size = 16, mean = { 0.5, 0.5, 0.5 },
                       std = { 0.25, 0.25, 0.25 }, random_crop = { padding = 2 }, random_horizontal_flip = 0.5 },
  batch_size = 10,
  loss = function(m, b) return cross_entropy(m(b), b.label) end,
  optimizer = SGD { lr = 0.02, momentum = 0.9 },
  epochs = 6,
}
LUAEOF
trains_to "${CASES[16]}" img_cnn bi ri "val/acc" "> 0.8"
# the crops and flips are a function of (seed, epoch, sample): a run stopped after 4 steps
# (mid-epoch) and resumed to 8 ends with the checkpoint of 8 steps straight
T="$work/bi/train"
if OMP_NUM_THREADS=1 "$T" --max-steps 8 --out "$work/ra" >"$work/log" 2>&1 &&
   OMP_NUM_THREADS=1 "$T" --max-steps 4 --out "$work/rb" >>"$work/log" 2>&1 &&
   OMP_NUM_THREADS=1 "$T" --resume "$work/rb/last.safetensors" --max-steps 8 --out "$work/rb" >>"$work/log" 2>&1; then
  if cmp -s "$work/ra/last.safetensors" "$work/rb/last.safetensors"; then ok "${CASES[17]}"
  else fail "${CASES[17]}" "the checkpoints differ: $(cmp "$work/ra/last.safetensors" "$work/rb/last.safetensors")"; fi
else fail "${CASES[17]}" "$(tail -1 "$work/log")"; fi
expect_error "${CASES[18]}" "badjpg/imgs/cat/broken.jpg: corrupt JPEG: " "$T" --data "$work/badjpg" --out "$work/o"
expect_error "${CASES[19]}" "badpng/imgs/cat/broken.png: corrupt PNG: " "$T" --data "$work/badpng" --out "$work/o"
expect_error "${CASES[20]}" "bmp/imgs/cat/old.bmp: only PNG and JPEG images are read" "$T" --data "$work/bmp" --out "$work/o"
expect_error "${CASES[21]}" "other/imgs_val: its 1 class folders are not those of $work/other/imgs (1): the labels would differ" "$T" --data "$work/other" --out "$work/o"
sed 's/mean = { 0.5, 0.5, 0.5 }/mean = { 0.5, 0.5 }/' "$work/img_cnn.lua" >"$work/img_bad.lua"
err=$("$LOOM" build "$work/img_bad.lua" -o "$work/bb" 2>&1); rc=$?
case "$rc:$err" in [12]:*"img_bad.lua:8"*"ImageFolder.mean has 2 values for 3 channels"*) ok "${CASES[22]}" ;;
  *) fail "${CASES[22]}" "exit $rc: $err" ;; esac
# the CUDA program reads data on the host with the same runtime: it carries images.c and links the libraries
if "$LOOM" build "$work/img_cnn.lua" -o "$work/bcu" --accelerator=cuda --no-compile >"$work/log" 2>&1 &&
   grep -q -- "-lpng -ljpeg" "$work/bcu/build.ninja" && [ -f "$work/bcu/images.c" ] && grep -q "&augmentation" "$work/bcu/train.c"
then ok "${CASES[23]}"; else fail "${CASES[23]}" "$(tail -1 "$work/log")"; fi
# ... and runs: built against tests/cuda_emu (the CUDA runtime emulated on the CPU), 3 steps
CUDA=${CUDA_HOME:-/usr/local/cuda}
if [ ! -f "$CUDA/include/cuda_runtime.h" ] || [ -z "$(ls "$CUDA"/lib64/libnvrtc.so* 2>/dev/null)" ] || ! command -v g++ >/dev/null; then
  skip "${CASES[24]}" "no CUDA toolkit (headers, NVRTC) at $CUDA"
elif ! tests/cuda_emu/build.sh "$work/bcu" >"$work/emu.log" 2>&1; then
  fail "${CASES[24]}" "emulated build failed: $(grep -m1 -i error "$work/emu.log")"
elif ! "$work/bcu/emu/run" --max-steps 3 --out "$work/rcu" >"$work/log" 2>&1; then
  fail "${CASES[24]}" "$(tail -1 "$work/log")"
elif grep -q "trained 3 steps" "$work/log"; then ok "${CASES[24]} ($(grep -o "val/loss [0-9.]*" "$work/log" | tail -1))"
else fail "${CASES[24]}" "$(tail -1 "$work/log")"; fi
if [ ! -f "$work/bc/images.c" ] && ! grep -q -- "-lpng" "$work/bc/build.ninja" && [ -f "$work/bi/images.c" ] &&
   grep -q -- "-lz -lpng -ljpeg" "$work/bi/build.ninja"; then ok "${CASES[25]}"
else fail "${CASES[25]}" "the CSV program carries images.c or links libpng, or the image program does not"; fi
