"""Fake-quantization simulator for int8 variants on the real EmbeddingGemma-300m (research tool).

    python benchmarks/int8_variants.py --model DIR [--schemes NAME,NAME,...] [--json out.json]
    python benchmarks/int8_variants.py --model DIR --validate     # simulator against the real engine
    python benchmarks/int8_variants.py --list                     # the named schemes

How it simulates
----------------
sentence-transformers runs the model on PyTorch float32; the nn.Linear modules of the 24 transformer
layers (q, k, v, o, gate, up, down) are replaced by ``FakeQuantLinear``, which computes
``y = deq(quant_a(x / s)) @ deq(quant_w(W * s))^T`` (+ a float part for outlier channels), with the
rounding of the C engine (csrc/pack.c for the weights, csrc/kernels_scalar.c for the activations):

- weights (``eg_matrix_pack_row``, type I8): per output row and block of B=32 (or 16) inputs,
  ``inv = 127 / amax`` (float32), ``q = nearbyint(w * inv)`` (ties to even) clamped to +-127,
  scale ``amax / 127``;
- activations (``eg_quantize_blocks_u8``): per token and block of 32 inputs, ``inv = qmax / amax``,
  ``q = round_even(x * inv)`` clamped to +-qmax, scale ``amax / qmax``; qmax = 127 (scalar / VNNI
  kernels) or 63 (AVX2, ``eg_matrix_ranges``: vpmaddubsw's int16 pair sums must not saturate);
  per-token variants use one amax per row; int16 variants use qmax = 32767;
- the products are dequantized and summed in float32 (the engine sums exact int32 per block and
  scales per block: the two differ by float rounding only, ~1e-7 relative);
- "bfloat16" layers round the weights to bfloat16 (nearest even) and keep float32 activations
  (the shipped int8 keeps the last 3 of 24 layers so); "float32" layers are left alone.

The Dense head, embeddings, norms, attention and pooling stay float32. Texts go through
``encode_query`` / ``encode_document`` with the model's prompts, batched by length (padding does not
change a valid token's rows: every quantization here is per token, attention masks the pads).

Per-input-channel scales s (AWQ, SmoothQuant) are applied as ``x / s`` inside the wrapper and
``W * s`` before weight quantization. That equals folding them at load time, exactly up to float
rounding: for q/k/v into input_layernorm's gain (1 + w) (one s for the three, which share the input),
for gate/up into pre_feedforward_layernorm's gain, for down_proj into up_proj's rows (the input is
gelu(gate) * up; per-row weight quantization of up is invariant to a row's scale), for o_proj into
v_proj's rows (attention output is linear in V) -- which needs the scale of o_proj input channel
(h, d) to be the same for the 3 query heads h (1 KV head of 256 shared): ``--o-scale shared`` (default,
foldable) takes the stats over the heads together; ``free`` gives each of the 768 inputs its own
scale (a per-call multiply of the attention output, not foldable).

Outlier channels (``outK``): the K input channels of each linear with the largest calibration
max|x| are computed in float32 (both x and W columns) beside an int8 remainder whose blocks
exclude them (zeroed before quantization; in C they would be gathered out at load time).

GPTQ (``gptq``): the weights are rounded onto the same grid (the scales of the original blocks, so the
engine could store the result as it stores int8 rows) column by column, each column's rounding error
pushed onto the columns not yet rounded through the inverse Cholesky factor of the calibration
Hessian X^T X of that linear's input (float model, one Hessian per input group: qkv, o, gate/up, down;
damped by 1% of its mean diagonal; with AWQ, of x / s). Activations are quantized as the scheme says.

16-bit integers on a 12-bit grid (``wbits=12``, act ``b12``): weights and activations per row / token
and block of 32 with qmax 2047, so a block's 32 products sum below 2^27 and vpmaddwd (AVX2) or
vpdpwssd (VNNI) accumulate them exactly in int32; benchmarks/gemm_ceiling.c times the engine's kernel.

Calibration (AWQ / SmoothQuant statistics, outliers, measured sensitivity, GPTQ) uses CALIB_QUERIES and
CALIB_PARAGRAPHS below, written for this file (not the test texts), with the same prompts, plus two
long documents made of joined paragraphs.

"float MAC fraction": share of the 24 layers' linear multiply-adds (per token, 4.23 M) that stay in
floating point (float32 or bfloat16 layers, outlier columns); attention's own products (float in
every scheme) and the Dense head are not counted.

Validated (see --validate; 2-core Zen 3, 2026-12-07): the shipped scheme with 7-bit activations
(last 3 layers bfloat16) simulated: worst cosine 0.999715, mean 0.999812, top-10 0.981, ties forgiven
1.000; the engine (``EMBGEMMA_ISA=avx2``, int8): 0.999681, 0.999808, 0.983, 1.000. With 8-bit
activations the simulation gives 0.999870, 0.999922, 0.992, 1.000 against docs/fidelity.md's VNNI
engine figures 0.999881, 0.999922, 0.989, 1.000; all 24 layers int8 with 7-bit activations 0.999486,
0.999635, 0.978 against the documented 0.999454, 0.999624, 0.981. The aggregate figures agree to
~3e-5 in worst cosine, ~5e-6 in mean cosine and a swap or two in top-10; the per-text embeddings do
not (sim against engine, AVX2: 1 - mean cosine 1.8e-4, as far apart as either is from the reference):
float-rounding differences (~1e-7) flip roundings at quantization boundaries and the flips compound
over 24 layers, so the simulator reproduces the error's statistics, not its realization. Read
differences below ~5e-5 in worst cosine or +-0.005 in top-10 overlap between schemes as noise.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("_eg_fidelity", REPO / "benchmarks" / "fidelity.py")
fidelity = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fidelity
_spec.loader.exec_module(fidelity)


# ---------------------------------------------------------------------------- calibration texts
# Written for this file (not the test texts): varied topics, a code snippet, a list, figures.

CALIB_QUERIES = [
    "how do honey bees decide where to build a new hive",
    "what is the difference between a Roth IRA and a traditional IRA",
    "javascript promise then vs async await",
    "why do cats knead blankets",
    "how long should I let pottery dry before the bisque firing",
    "best way to store fresh basil",
    "what is a TCP three-way handshake",
    "how do solar panels work on cloudy days",
    "symptoms of a torn meniscus",
    "how to read a topographic map contour lines",
    "what caused the fall of the Western Roman Empire",
    "rust borrow checker error cannot borrow as mutable",
    "how do hurricanes get their names",
    "what is the nitrogen cycle in a new aquarium",
    "kubernetes pod stuck in CrashLoopBackOff",
    "how many watts does a space heater use per hour",
    "what makes a wine taste dry",
    "how to tune a guitar without a tuner",
    "is it safe to eat wild mushrooms after cooking them",
    "how does a mortgage amortization schedule work",
    "what is the event horizon of a black hole",
    "sql left join vs inner join example",
    "how to treat a minor kitchen burn",
    "why do knitted scarves curl at the edges",
]

CALIB_PARAGRAPHS = [
    "When a honey bee colony grows too large, the old queen leaves with about half of the workers. The swarm hangs on a branch while a few hundred scouts inspect hollow trees, wall cavities and empty boxes. Each scout that finds a promising site returns and performs a waggle dance whose length reflects her enthusiasm. Over a day or two, support for the best site snowballs until a quorum of scouts gathers there, and the whole swarm takes off.",
    "A traditional individual retirement account lets you deduct contributions now and pay income tax when you withdraw the money in retirement. A Roth account works the other way around: contributions are made with money that has already been taxed, and qualified withdrawals, including decades of growth, come out tax free. Which one is better depends mostly on whether you expect your tax rate to be higher now or later.",
    "An async function always returns a promise. Inside it, the await keyword pauses execution until the awaited promise settles, which makes asynchronous code read like a sequence of ordinary statements. Chaining .then() calls achieves the same result, but error handling is spread across .catch() handlers instead of a single try/catch block. Under the hood both approaches schedule continuations on the microtask queue.",
    "Kneading, the rhythmic pushing of the front paws against a soft surface, begins in kittenhood, when it stimulates the flow of milk from the mother. Many adult cats keep the habit and do it when they feel safe and content, often while purring. Scent glands in the paw pads also leave a faint mark, so the behaviour may double as a way of claiming a favourite blanket or lap.",
    "Greenware must be bone dry before it goes into the kiln, because any water left in the clay turns to steam and can crack or even burst the piece. Thin cups may be ready after two or three days in a dry room, while thick sculptures can need two weeks. A simple test is to hold the piece against your cheek: if it feels cool, it still contains moisture.",
    "Basil is a tropical herb and dislikes the cold of a refrigerator, where its leaves quickly blacken. Trim the stems and stand the bunch in a glass of water on the kitchen counter, loosely covered with a plastic bag, and change the water every day or two. For longer storage, blend the leaves with olive oil and freeze the paste in an ice cube tray.",
    "Before two hosts exchange data over TCP, they agree on initial sequence numbers. The client sends a SYN segment carrying its number, the server answers with a SYN-ACK that acknowledges it and carries its own, and the client replies with an ACK. Only then is the connection considered established. The exchange protects against old duplicate segments being mistaken for a new connection.",
    "Photovoltaic cells respond to light, not heat, so they keep producing electricity under clouds, though at a reduced rate. Thin cloud cover may cut output by a quarter, while heavy overcast can reduce it to a tenth of the clear-sky value. Cold, bright days are actually ideal, because the efficiency of silicon cells falls as their temperature rises.",
    "The menisci are two C-shaped pads of cartilage that cushion the knee joint. A tear often happens during a sudden twist while the foot is planted, and it may cause a popping sensation, swelling over the next day, stiffness, and a feeling that the knee catches or locks. Small tears on the outer edge, which has a blood supply, can heal with rest and physiotherapy.",
    "Each contour line on a topographic map connects points of equal elevation. Where the lines crowd together the slope is steep; where they spread apart the ground is gentle. Lines that form a V pointing uphill mark a stream valley, and closed loops indicate a hilltop or, when drawn with small ticks, a depression. The contour interval printed in the legend tells you the height difference between neighbouring lines.",
    "Historians still argue about why the Western Roman Empire collapsed in the fifth century. Explanations include decades of civil war, a shrinking tax base, debased currency, pressure from migrating peoples along the Rhine and Danube, and the division of the empire into eastern and western halves. Most modern accounts stress that the decline was gradual and that daily life in many provinces changed little at first.",
    "The Rust compiler enforces that a value can have either one mutable reference or any number of shared references at a time, but not both. The error 'cannot borrow as mutable because it is also borrowed as immutable' usually means a shared reference is still alive when you try to modify the data. Shortening the scope of the first borrow, cloning the value, or restructuring the loop typically resolves it.",
    "Tropical cyclones in the Atlantic receive names from six rotating lists maintained by the World Meteorological Organization. A storm is named once its sustained winds reach thirty-nine miles per hour. The lists repeat every six years, but the name of a particularly deadly or costly hurricane is retired and replaced, which is why there will never be another Katrina or Sandy.",
    "Fish produce ammonia, which is toxic even at low levels. In a healthy tank, one group of bacteria converts ammonia into nitrite and another converts nitrite into the much less harmful nitrate, which is removed by regular water changes. Establishing these colonies takes four to six weeks, and adding too many fish before the cycle completes is the most common cause of losses in a new aquarium.",
    "CrashLoopBackOff means the container starts, exits, and is restarted by the kubelet with an increasing delay. Run kubectl describe pod to see the last state and exit code, and kubectl logs --previous to read the output of the failed run. Common causes are a missing environment variable, a misconfigured command, a failing liveness probe, or an application that cannot reach its database at startup.",
    "A typical portable space heater draws about 1,500 watts on its high setting, so running it for one hour consumes 1.5 kilowatt-hours of electricity. At a price of fifteen cents per kilowatt-hour, that comes to roughly twenty-two cents an hour. Thermostat-controlled models cycle on and off once the room is warm, so their real consumption is often lower.",
    "In wine, dry simply means that little or no sugar remains after fermentation, usually less than four grams per litre. Many people confuse dryness with the puckering sensation of tannins, which come from grape skins, seeds and oak barrels and bind to proteins in saliva. A fruity red can taste sweet without containing sugar, because ripe aromas trick the brain.",
    "To tune by ear, start with the low E string as a reference. Press the low E at the fifth fret and tune the open A string until the two notes match without a wavering beat. Repeat at the fifth fret of each string, except that the G string is fretted at the fourth fret to tune the B string. The result is in tune with itself, if not exactly with a piano.",
    "Cooking destroys some mushroom toxins but not the most dangerous ones. The amatoxins in death caps and destroying angels survive boiling, frying and drying, and a single cap can cause fatal liver failure. Symptoms often start only six to twelve hours after the meal, by which time the poison has already been absorbed. Never eat a wild mushroom unless an expert has identified it with certainty.",
    "With a fixed-rate mortgage, each monthly payment is the same, but its composition changes over time. Early payments consist mostly of interest, because interest is charged on the large outstanding balance; as the principal shrinks, a growing share of each payment goes toward paying it down. An amortization schedule lists this split for every month of the loan's term.",
    "The event horizon is the boundary around a black hole beyond which nothing, not even light, can escape. Its radius, the Schwarzschild radius, grows in proportion to the mass: about three kilometres for a black hole with the mass of the Sun. An observer falling through the horizon of a large black hole would notice nothing special at that moment, although distant observers would never see them cross.",
    "An inner join returns only the rows that have matching values in both tables. A left join returns every row of the left table, and where no match exists in the right table, its columns are filled with NULL. For example, SELECT c.name, o.id FROM customers c LEFT JOIN orders o ON o.customer_id = c.id lists every customer, including those who have never placed an order.",
    "For a small first-degree burn, hold the area under cool running water for about twenty minutes, which limits the damage to deeper tissue. Do not use ice, butter or toothpaste. Afterwards cover the burn loosely with a sterile non-stick dressing and take an over-the-counter pain reliever if needed. Seek medical care for burns larger than your palm or on the face, hands or joints.",
    "Stockinette stitch curls because knit stitches and purl stitches have slightly different shapes, which creates tension between the two faces of the fabric. The edges roll toward the purl side along the sides and toward the knit side at the ends. Adding a border of garter stitch, seed stitch or ribbing balances the tension and keeps a scarf flat.",
    "Roman engineers carried water to their cities through aqueducts that descended at a very gentle, constant gradient, sometimes only a few centimetres per kilometre. Most of the channel ran underground or along hillsides; the famous arched bridges were needed only to cross valleys. At the city end, water flowed into distribution tanks and then through lead pipes to fountains, baths and wealthy homes.",
    "Semiconductor chips are made by repeatedly depositing thin layers of material on a silicon wafer and patterning them with light. In photolithography, a light-sensitive resist is exposed through a mask, developed, and used as a stencil for etching. Modern extreme ultraviolet machines use light with a wavelength of 13.5 nanometres, generated by hitting droplets of molten tin with a powerful laser.",
    "Most earthquakes occur along the boundaries of tectonic plates, where stress builds up as the plates grind past each other until the rocks suddenly slip. The magnitude scale is logarithmic: each whole number corresponds to about thirty-two times more released energy. The damage at a given place depends on the distance to the rupture, the depth, and especially on the local soil, since loose sediments amplify shaking.",
    "Jazz improvisation is not random. Players learn the chord changes of a tune and the scales that fit them, memorize phrases from recordings of the masters, and practise connecting those ideas smoothly across the harmony. In a performance, musicians also listen closely to each other, responding to a rhythmic figure from the drummer or echoing a motif played a chorus earlier.",
    "A sailboat can travel against the wind because its sail acts like an aircraft wing. Air flowing around the curved sail creates a pressure difference that produces lift roughly perpendicular to the sail, while the keel resists sideways drift. The combination drives the boat forward at an angle of about forty-five degrees to the wind, so reaching a point upwind requires a zigzag course of tacks.",
    "The traditional crane is folded from a single uncut square of paper. Starting from a square base, you make a bird base by petal-folding both sides, then narrow the lower flaps, reverse-fold them upward to form the neck and tail, and finally reverse-fold one tip to make the head. Thin paper of about fifteen centimetres is easiest for beginners.",
    "Cheese begins when milk is acidified by bacterial cultures and coagulated with rennet, an enzyme that makes the casein proteins clump into a gel. The curd is cut, stirred and heated to expel whey; smaller pieces and higher temperatures produce a drier, harder cheese. The curds are then salted, pressed into moulds and aged, during which enzymes and microbes develop the flavour.",
    "Linux file permissions are shown as three groups of three characters: read, write and execute for the owner, the group and everyone else. The command chmod 640 report.txt gives the owner read and write access, the group read access, and others nothing. On a directory, the execute bit means permission to enter it, and the read bit means permission to list its contents.",
    "Coral reefs are built by tiny animals called polyps that secrete skeletons of calcium carbonate. Inside their tissues live microscopic algae that supply most of the coral's food through photosynthesis. When the water becomes too warm for several weeks, the corals expel the algae and turn white, a process called bleaching. If temperatures do not fall soon, the starved corals die.",
    "The Silk Road was never a single road but a shifting network of caravan routes linking China with Central Asia, Persia and the Mediterranean. Besides silk, merchants carried spices, glass, horses, paper and precious metals. Ideas travelled too: Buddhism spread eastward along these routes, and techniques such as papermaking eventually reached the Islamic world and Europe.",
    "A classical bit is either zero or one, while a qubit can be in a superposition of both states. When several qubits are entangled, a quantum computer can represent an enormous number of amplitudes at once, and clever algorithms make the wrong answers interfere destructively. Current machines are noisy, however, and error correction requires many physical qubits for each reliable logical one.",
    "Password managers store your credentials in an encrypted vault unlocked by a single master password. Because you only have to remember that one, you can use a long random password for every website, so a breach at one service does not expose your other accounts. Enable two-factor authentication on the manager itself, and choose a master passphrase of several unrelated words.",
    "A unit test checks one small piece of code in isolation, typically a single function, by calling it with known inputs and asserting on the result. Good unit tests are fast, deterministic and independent of each other, so they can run on every change. Dependencies such as databases or network services are replaced with fakes or mocks so that a failure points directly at the code under test.",
    "Dynamic climbing ropes stretch by up to a third of their length when they catch a fall, which spreads the force over a longer time and protects both the climber and the anchors. Static ropes stretch very little and are used for rappelling, hauling and rescue. Ropes should be retired after a severe fall, visible damage to the sheath, or about ten years even if unused.",
    "The Apollo 11 lunar module landed in the Sea of Tranquillity on 20 July 1969 with less than a minute of descent fuel to spare, after Neil Armstrong steered past a field of boulders. He and Buzz Aldrin spent about two and a half hours walking on the surface, collecting rock samples and setting up experiments, while Michael Collins orbited alone in the command module.",
    "Regular practice matters more than long sessions when learning the piano. Twenty to thirty focused minutes a day, split between scales, a technical exercise and a piece, builds skill faster than a three-hour session once a week. Practise difficult passages slowly with a metronome, hands separately at first, and increase the tempo only when you can play them cleanly.",
    "def moving_average(xs, n):\n    total = sum(xs[:n])\n    out = [total / n]\n    for i in range(n, len(xs)):\n        total += xs[i] - xs[i - n]\n        out.append(total / n)\n    return out\n\nThis keeps a running sum, so each new window costs O(1) instead of O(n).",
    "Shopping list for the weekend: 2 kg potatoes, 1 bunch of carrots, 500 g minced beef, 3 onions, a jar of tomato passata, 12 eggs, oat milk, rye bread, cheddar (mature), frozen peas, washing-up liquid, and 4 AA batteries for the smoke alarm.",
    "Quarterly results: revenue rose 8.4% year over year to $312 million, while operating margin fell from 14.1% to 12.7% because of higher freight costs. The company reaffirmed its full-year guidance of $1.21-1.25 billion and announced a share buyback of up to $50 million.",
    "Urban planners increasingly favour mixed-use neighbourhoods, in which homes, shops, offices and schools sit within walking distance of each other. Shorter trips make walking, cycling and public transport practical, which reduces traffic and emissions. Critics point out that rezoning alone does not guarantee affordable housing and that local residents often resist higher density.",
    "Seasonal allergies happen when the immune system overreacts to harmless pollen, releasing histamine that causes sneezing, a runny nose and itchy eyes. Tree pollen peaks in spring, grass pollen in early summer, and ragweed in late summer and autumn. Antihistamines, nasal steroid sprays and keeping windows closed on dry, windy days all help reduce symptoms.",
    "The French Revolution began in 1789 amid a financial crisis, bad harvests and resentment of aristocratic privilege. The storming of the Bastille, the abolition of feudal rights and the Declaration of the Rights of Man transformed the country within months. The following decade brought war, the execution of the king, the Terror and finally the rise of Napoleon Bonaparte.",
    "Green, white, oolong and black teas all come from the same plant, Camellia sinensis; the difference lies in processing. Green tea is heated soon after picking to stop oxidation, oolong is partly oxidized, and black tea is fully oxidized, which darkens the leaves and deepens the flavour. Water temperature matters: green tea turns bitter with boiling water, while black tea needs it.",
]


def calib_texts() -> tuple[list[str], list[str]]:
    """Queries and documents for calibration (two long documents of ~12 joined paragraphs each)."""
    p = CALIB_PARAGRAPHS
    docs = list(p) + [" ".join(p[0:24:2]), " ".join(p[1:25:2] + p[30:36])]
    return list(CALIB_QUERIES), docs


MATS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
N_LAYERS = 24
# (out, in) of each matrix: MACs per token
SHAPES = {"q_proj": (768, 768), "k_proj": (256, 768), "v_proj": (256, 768), "o_proj": (768, 768),
          "gate_proj": (1152, 768), "up_proj": (1152, 768), "down_proj": (768, 1152)}
MACS_LAYER = sum(o * i for o, i in SHAPES.values())
GROUP = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "o_proj": "o", "gate_proj": "gu", "up_proj": "gu",
         "down_proj": "down"}


@dataclass(frozen=True)
class Scheme:
    act: str = "b8"            # f | b7 | b8 | b16 (int16 per block) | t7 | t8 | t16 (per token)
    wblock: int = 32           # weight block (k)
    wbits: int = 8             # 8 (qmax 127), 12 (qmax 2047: int16 storage, vpmaddwd-safe with b12)
    tail: int = 3              # last `tail` layers not quantized
    tail_dtype: str = "bf16"   # bf16 | f32
    float_layers: tuple = ()   # extra layers (indices) in float32
    float_mats: tuple = ()     # extra (layer, mat) in float32
    awq: float | None = None   # alpha: s = mean|x|^alpha
    smooth: float | None = None  # alpha: s = max|x|^a / max|W|^(1-a)
    o_scale: str = "shared"    # shared (foldable into v_proj) | free | none
    outliers: int = 0          # k input channels in float
    gptq: bool = False         # weights rounded by GPTQ (error feedback through the calibration Hessian)
    note: str = ""

    def layer_mode(self, l: int) -> str:
        if l >= N_LAYERS - self.tail:
            return self.tail_dtype
        if l in self.float_layers:
            return "f32"
        return "q"

    def float_mac_fraction(self) -> float:
        fl = 0
        for l in range(N_LAYERS):
            for m, (o, i) in SHAPES.items():
                if self.layer_mode(l) != "q" or (l, m) in self.float_mats:
                    fl += o * i
                elif self.outliers:
                    fl += o * self.outliers
        return fl / (N_LAYERS * MACS_LAYER)


def _schemes() -> dict[str, Scheme]:
    S = {}
    # validation / today
    S["shipped_a8"] = Scheme(act="b8", tail=3, tail_dtype="bf16", note="today, VNNI/scalar")
    S["shipped_a7"] = Scheme(act="b7", tail=3, tail_dtype="bf16", note="today, AVX2")
    # 1. activations, all 24 layers int8 weights
    for a in ("f", "b7", "b8", "t16", "b16"):
        S[f"all24_{a}"] = Scheme(act=a, tail=0)
    # 2. tails in float32
    for a in ("b7", "b8", "t16"):
        for t in (3, 4, 6, 8):
            S[f"tail{t}f32_{a}"] = Scheme(act=a, tail=t, tail_dtype="f32")
    # 3. AWQ
    for a in ("b7", "b8"):
        for al in (0.25, 0.5, 0.75, 1.0):
            S[f"awq{al}_{a}"] = Scheme(act=a, tail=0, awq=al)
    # 4. SmoothQuant with per-token activations
    for a in ("t7", "t8"):
        S[f"all24_{a}"] = Scheme(act=a, tail=0)
        for al in (0.25, 0.5, 0.75):
            S[f"sq{al}_{a}"] = Scheme(act=a, tail=0, smooth=al)
    # 5. outliers
    for a in ("b7", "b8"):
        for k in (8, 16, 32):
            S[f"out{k}_{a}"] = Scheme(act=a, tail=0, outliers=k)
    # 6. weight block 16
    for a in ("b7", "b8"):
        S[f"wb16_{a}"] = Scheme(act=a, tail=0, wblock=16)
    # combinations
    for a in ("b7", "b8", "t16"):
        for al in (0.25, 0.5):
            S[f"awq{al}_{a}"] = Scheme(act=a, tail=0, awq=al)
            for t in (3, 4):
                S[f"awq{al}_tail{t}f32_{a}"] = Scheme(act=a, tail=t, tail_dtype="f32", awq=al)
        S[f"awq0.5free_{a}"] = Scheme(act=a, tail=0, awq=0.5, o_scale="free")
        for k in (16, 32):
            S[f"out{k}_tail3f32_{a}"] = Scheme(act=a, tail=3, tail_dtype="f32", outliers=k)
        S[f"wb16_tail3f32_{a}"] = Scheme(act=a, tail=3, tail_dtype="f32", wblock=16)
    # GPTQ weight rounding, alone, with AWQ scales, and under the shipped bfloat16 tail
    for a in ("b7", "b8", "t16"):
        S[f"gptq_{a}"] = Scheme(act=a, tail=0, gptq=True)
        S[f"awq0.5_gptq_{a}"] = Scheme(act=a, tail=0, awq=0.5, gptq=True)
        S[f"gptq_tail3bf16_{a}"] = Scheme(act=a, tail=3, tail_dtype="bf16", gptq=True)
    # 16-bit integer storage on a 12-bit grid: per block of 32, 32 products of 2047 x 2047 stay
    # below 2^27, so vpmaddwd / vpdpwssd sums cannot overflow int32
    S["w12_b12"] = Scheme(act="b12", tail=0, wbits=12)
    S["w12_b8"] = Scheme(act="b8", tail=0, wbits=12)
    S["w12_f"] = Scheme(act="f", tail=0, wbits=12)
    S["out16_t16"] = Scheme(act="t16", tail=0, outliers=16)
    S["wb16_t16"] = Scheme(act="t16", tail=0, wblock=16)
    return S


SCHEMES = _schemes()


# ---------------------------------------------------------------------------- fake quantization

def _torch():
    import torch
    return torch


def quant_blocks(x, block: int, qmax: float):
    """Symmetric absmax per row (last dim) and block; ties to even; dequantized, float32."""
    torch = _torch()
    shape = x.shape
    k = shape[-1]
    if block <= 0 or block >= k:
        block = k
    xb = x.reshape(*shape[:-1], k // block, block)
    amax = xb.abs().amax(-1, keepdim=True)
    qm = torch.tensor(qmax, dtype=x.dtype)
    inv = torch.where(amax > 0, qm / amax, torch.zeros_like(amax))
    v = torch.round(xb * inv).clamp_(-qmax, qmax)
    return (v * (amax / qm)).reshape(shape)


ACT = {"f": None, "b7": (32, 63), "b8": (32, 127), "b12": (32, 2047), "b16": (32, 32767),
       "t7": (0, 63), "t8": (0, 127), "t16": (0, 32767)}


def quant_act(x, act: str):
    spec = ACT[act]
    return x if spec is None else quant_blocks(x, *spec)


def gptq_quant(weight, hessian, block: int = 32, qmax: float = 127.0, damp: float = 0.01):
    """GPTQ (Frantar et al. 2022) onto the engine's grid: per row and block of ``block`` inputs the
    scale is the original block's amax / qmax (fixed before rounding, so the result is stored exactly
    as the engine's int8 rows are); columns are rounded in order and each one's rounding error is
    pushed onto the columns not yet rounded through the inverse of the calibration Hessian X^T X
    (damped by ``damp`` times its mean diagonal). Returns the dequantized weight, float32."""
    torch = _torch()
    W = weight.detach().double().clone()
    rows, n = W.shape
    H = hessian.detach().double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    amax = W.view(rows, n // block, block).abs().amax(-1)           # [rows, n / block]
    scale = (amax / qmax).repeat_interleave(block, dim=1)          # [rows, n]
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    H += damp * torch.diag(H).mean() * torch.eye(n, dtype=H.dtype)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    lazy = 128  # columns whose updates are applied to the rest as one product (same result, faster)
    for c0 in range(0, n, lazy):
        c1 = min(c0 + lazy, n)
        E = torch.zeros(rows, c1 - c0, dtype=W.dtype)
        for i in range(c0, c1):
            w = W[:, i]
            q = torch.where(scale[:, i] > 0, torch.round(w / safe[:, i]).clamp(-qmax, qmax) * scale[:, i],
                            torch.zeros_like(w))
            Q[:, i] = q
            e = (w - q) / U[i, i]
            E[:, i - c0] = e
            W[:, i + 1:c1] -= e[:, None] * U[i, i + 1:c1][None, :]
        W[:, c1:] -= E @ U[c0:c1, c1:]
    return Q.float()


def make_fq_linear(weight, act: str, wblock: int, inv_scale=None, outlier_idx=None, mode="q",
                   prequantized=False, wqmax=127.0):
    """A module computing the linear as the scheme says; weight [out, in] float32 (already * s;
    already on the int8 grid when ``prequantized``, as GPTQ leaves it)."""
    torch = _torch()
    import torch.nn as nn

    class _FQ(nn.Module):
        def __init__(self):
            super().__init__()
            self.mode = mode
            self.act = act
            w = weight.detach().float().clone()
            if mode == "bf16":
                self.register_buffer("w", w.to(torch.bfloat16).float())
                self.inv_scale = None
                self.oidx = None
                return
            if mode == "f32":
                self.register_buffer("w", w)
                self.inv_scale = None
                self.oidx = None
                return
            self.inv_scale = inv_scale
            self.oidx = outlier_idx
            if outlier_idx is not None:
                self.w_out = w[:, outlier_idx].clone()
                w[:, outlier_idx] = 0.0
            self.register_buffer("w", w if prequantized else quant_blocks(w, wblock, wqmax))

        def forward(self, x):
            if self.mode != "q":
                return x @ self.w.T
            if self.inv_scale is not None:
                x = x * self.inv_scale
            if self.oidx is not None:
                xo = x[..., self.oidx]
                xi = x.clone()
                xi[..., self.oidx] = 0.0
                return quant_act(xi, self.act) @ self.w.T + xo @ self.w_out.T
            return quant_act(x, self.act) @ self.w.T

    return _FQ()


# ---------------------------------------------------------------------------- model

class Sim:
    def __init__(self, model_dir: str, threads: int = 2, batch_size: int = 8):
        torch = _torch()
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.st = SentenceTransformer(str(model_dir), device="cpu", model_kwargs={"dtype": torch.float32})
        self.st.float()
        self.st.eval()
        self.batch_size = batch_size
        self.layers = self.st[0].auto_model.layers
        assert len(self.layers) == N_LAYERS
        self.orig = {}  # (l, mat) -> (parent, attr, original nn.Linear)
        for l, layer in enumerate(self.layers):
            for m in MATS:
                parent = layer.self_attn if m in ("q_proj", "k_proj", "v_proj", "o_proj") else layer.mlp
                self.orig[(l, m)] = (parent, m, getattr(parent, m))
        self.stats = None

    def restore(self):
        for (parent, attr, lin) in self.orig.values():
            setattr(parent, attr, lin)

    def _encode(self, fn, texts):
        """fn (encode_query / encode_document) over texts, batched by length: texts of more than
        LONG characters one at a time (padding a 1800-token document's batch would double the work)."""
        texts = list(texts)
        out = [None] * len(texts)
        long = [i for i, t in enumerate(texts) if len(t) > self.LONG]
        short = [i for i in range(len(texts)) if len(texts[i]) <= self.LONG]
        if short:
            e = fn([texts[i] for i in short], batch_size=self.batch_size, convert_to_numpy=True)
            for i, v in zip(short, e):
                out[i] = v
        for i in long:
            out[i] = fn([texts[i]], batch_size=1, convert_to_numpy=True)[0]
        return np.asarray(np.stack(out), np.float32)

    LONG = 1200  # characters (~250 tokens)

    def encode(self, queries, docs):
        torch = _torch()
        with torch.inference_mode():
            q = self._encode(self.st.encode_query, queries)
            d = self._encode(self.st.encode_document, docs)
        return q, d

    # -- calibration statistics: per linear input channel, mean |x| and max |x| over tokens
    def calibrate(self):
        torch = _torch()
        f = CACHE / "calib_stats.pt"
        if f.is_file():
            self.stats = torch.load(f)
            return self.stats
        self.restore()
        sums, maxs, counts = {}, {}, {}
        hooks = []
        for key, (parent, attr, lin) in self.orig.items():
            def hook(mod, inp, out, key=key):
                x = inp[0].detach().reshape(-1, inp[0].shape[-1])
                # drop padded rows: pads are rows whose input is exactly the pad pattern; we use a mask
                mask = self._row_mask
                if mask is not None and mask.numel() == x.shape[0]:
                    x = x[mask]
                a = x.abs()
                sums[key] = sums.get(key, 0) + a.sum(0).double()
                maxs[key] = torch.maximum(maxs[key], a.amax(0)) if key in maxs else a.amax(0)
                counts[key] = counts.get(key, 0) + x.shape[0]
            hooks.append(lin.register_forward_hook(hook))
        # pads: encode one text at a time so no row is a pad
        self._row_mask = None
        bs = self.batch_size
        self.batch_size = 1
        try:
            q, d = calib_texts()
            self.encode(q, d)
        finally:
            self.batch_size = bs
            for h in hooks:
                h.remove()
        self.stats = {k: {"mean": (sums[k] / counts[k]).float(), "max": maxs[k].float()} for k in sums}
        CACHE.mkdir(parents=True, exist_ok=True)
        torch.save(self.stats, f)
        return self.stats

    def hessians(self):
        """Per layer and input group (qkv, o, gu, down): X^T X of the linear's input over the
        calibration tokens of the float model, float64; one text at a time, so no row is a pad."""
        torch = _torch()
        f = CACHE / "calib_hessians.pt"
        if getattr(self, "hess", None) is not None:
            return self.hess
        if f.is_file():
            self.hess = torch.load(f)
            return self.hess
        self.restore()
        hess, hooks = {}, []
        for (l, m), (parent, attr, lin) in self.orig.items():
            if m not in ("q_proj", "o_proj", "gate_proj", "down_proj"):
                continue  # k, v share q's input; up shares gate's
            def hook(mod, inp, out, key=(l, GROUP[m])):
                x = inp[0].detach().reshape(-1, inp[0].shape[-1]).double()
                hess[key] = hess.get(key, 0) + x.T @ x
            hooks.append(lin.register_forward_hook(hook))
        bs = self.batch_size
        self.batch_size = 1
        try:
            self.encode(*calib_texts())
        finally:
            self.batch_size = bs
            for h in hooks:
                h.remove()
        CACHE.mkdir(parents=True, exist_ok=True)
        torch.save(hess, f)
        self.hess = hess
        return hess

    def _channel_scale(self, l: int, m: str, sch: Scheme, o_scale: str):
        """s for the input channels of (l, m) (shared by the group that shares the input)."""
        torch = _torch()
        st = self.stats[(l, m)]
        if sch.awq is not None:
            x = st["mean"].clone()
            if m == "o_proj" and o_scale == "shared":
                x = x.view(3, 256).mean(0).repeat(3)
            s = x.clamp(min=1e-8) ** sch.awq
        else:
            xm = st["max"].clone()
            ws = [self.orig[(l, mm)][2].weight.detach().abs().amax(0) for mm in MATS if GROUP[mm] == GROUP[m]]
            wm = torch.stack(ws).amax(0)
            if m == "o_proj" and o_scale == "shared":
                xm = xm.view(3, 256).amax(0).repeat(3)
                wm = wm.view(3, 256).amax(0).repeat(3)
            s = xm.clamp(min=1e-5) ** sch.smooth / wm.clamp(min=1e-5) ** (1 - sch.smooth)
        s = s / torch.sqrt(s.max() * s.min())
        return s

    def apply(self, sch: Scheme):
        torch = _torch()
        self.restore()
        for (l, m), (parent, attr, lin) in self.orig.items():
            mode = sch.layer_mode(l)
            if mode == "q" and (l, m) in sch.float_mats:
                mode = "f32"
            w = lin.weight.detach().float()
            inv_scale, oidx = None, None
            if mode == "q" and (sch.awq is not None or sch.smooth is not None) and not (
                    m == "o_proj" and sch.o_scale == "none"):
                if self.stats is None:
                    self.calibrate()
                s = self._channel_scale(l, m, sch, sch.o_scale)
                w = w * s[None, :]
                inv_scale = 1.0 / s
            if mode == "q" and sch.outliers:
                if self.stats is None:
                    self.calibrate()
                mx = self.stats[(l, m)]["max"]
                if inv_scale is not None:
                    mx = mx * inv_scale
                oidx = torch.topk(mx, sch.outliers).indices.sort().values
            pre = False
            if mode == "q" and sch.gptq:
                if sch.outliers:
                    raise ValueError("gptq with outlier channels is not simulated")
                H = self.hessians()[(l, GROUP[m])]
                if inv_scale is not None:  # the input is x / s: H becomes diag(1/s) H diag(1/s)
                    si = inv_scale.double()
                    H = H * si[:, None] * si[None, :]
                w = gptq_quant(w, H, sch.wblock, float(2 ** (sch.wbits - 1) - 1))
                pre = True
            setattr(parent, attr, make_fq_linear(w, sch.act, sch.wblock, inv_scale, oidx, mode, pre,
                                                 float(2 ** (sch.wbits - 1) - 1)))


# ---------------------------------------------------------------------------- reference / figures

CACHE = Path("/tmp/int8r")


def load_reference(model_dir: str, corpus, threads: int):
    CACHE.mkdir(parents=True, exist_ok=True)
    f = CACHE / "reference.npz"
    if f.is_file():
        z = np.load(f)
        return fidelity.Embeddings(z["queries"], z["docs"], float(z["seconds"]), cached=True)
    ref = fidelity.reference(model_dir, corpus, threads, use_cache=False)
    np.savez(f, queries=ref.queries, docs=ref.docs, seconds=ref.seconds)
    return ref


def figures(q, d, ref, corpus, seconds=0.0) -> dict:
    r = fidelity.compare(fidelity.Embeddings(q, d, seconds), ref, corpus)
    return r


def engine_embeddings(model_dir: str, isa: str, corpus, threads: int, dtype: str = "int8"):
    """The real engine in a subprocess with EMBGEMMA_ISA=isa; cached under /tmp/int8r."""
    f = CACHE / f"engine_{dtype}_{isa}.npz"
    if not f.is_file():
        code = ("import sys, numpy as np; sys.path.insert(0, %r);"
                "from embgemma import EmbeddingGemma; import json, time;"
                "d = json.load(open(%r));"
                "docs = [x['text'] for x in d['documents'] + d['long_documents']];"
                "qs = [x['text'] for x in d['queries']];"
                "m = EmbeddingGemma(%r, dtype=%r, threads=%d); t = time.perf_counter();"
                "q = m.encode_query(qs); D = m.encode_document(docs);"
                "np.savez(%r, queries=np.asarray(q, np.float32), docs=np.asarray(D, np.float32), "
                "seconds=time.perf_counter() - t)") % (str(REPO), str(fidelity.TEXTS_FILE), model_dir, dtype,
                                                      threads, str(f))
        env = dict(os.environ, EMBGEMMA_ISA=isa)
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
    z = np.load(f)
    return z["queries"], z["docs"], float(z["seconds"])


def cos_rows(a, b):
    return fidelity._cos_rows(a, b)


HEAD = ("| scheme | act | tail | worst cos | mean cos | top-1 | top-10 | ties forgiven | float MAC % | s |\n"
        "|---|---|---|---|---|---|---|---|---|---|")


def row(name, sch, r, secs):
    return (f"| {name} | {sch.act} | {sch.tail}{'' if not sch.tail else ' ' + sch.tail_dtype} | "
            f"{r['worst_cos']:.6f} | {r['mean_cos']:.6f} | {round(r['top1_agreement'] * r['queries'])}/{r['queries']} | "
            f"{r['top10_overlap']:.3f} | {r['top10_overlap_ties_forgiven']:.3f} | "
            f"{100 * sch.float_mac_fraction():.1f} | {secs:.0f} |")


def run_scheme(sim, name, sch, ref, corpus):
    t0 = time.perf_counter()
    sim.apply(sch)
    q, d = sim.encode(corpus.queries, corpus.docs)
    secs = time.perf_counter() - t0
    r = figures(q, d, ref, corpus, secs)
    r["float_mac_fraction"] = sch.float_mac_fraction()
    r["scheme"] = {k: v for k, v in sch.__dict__.items()}
    np.savez(CACHE / f"sim_{name}.npz", queries=q, docs=d)
    return r, q, d, secs


def calib_error(sim, sch, base):
    """1 - mean cosine to the float model on the calibration texts (base: float embeddings)."""
    sim.apply(sch)
    cq, cd = calib_texts()
    q, d = sim.encode(cq, cd)
    return float(1 - np.concatenate([cos_rows(q, base[0]), cos_rows(d, base[1])]).mean())


def sensitivity(sim, act: str, out: Path | None = None) -> list[float]:
    """Per layer: how much keeping layer l in float32 (all others int8, no tail) lowers the calibration error."""
    sim.restore()
    cq, cd = calib_texts()
    base = sim.encode(cq, cd)
    e0 = calib_error(sim, Scheme(act=act, tail=0), base)
    gains = []
    for l in range(N_LAYERS):
        e = calib_error(sim, Scheme(act=act, tail=0, float_layers=(l,)), base)
        gains.append(e0 - e)
        print(f"  sensitivity {act} layer {l}: err {e:.3e} (all-int8 {e0:.3e}) gain {e0 - e:.3e}", flush=True)
    if out:
        out.write_text(json.dumps({"act": act, "all_int8": e0, "gains": gains}))
    return gains


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.environ.get("EMBGEMMA_REAL_MODEL"))
    ap.add_argument("--schemes", default="", help="comma-separated names (--list); default: all")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--json", help="append/merge figures here")
    ap.add_argument("--validate", action="store_true", help="simulated shipped int8 against the engine (scalar, avx2)")
    ap.add_argument("--sensitivity", help="act mode: per-layer measured sensitivity on the calibration texts, "
                                          "then schemes keeping the top-n layers in float32")
    ap.add_argument("--float-check", action="store_true", help="with --validate: also the unquantized model, batched")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args(argv)
    if a.list:
        for n, s in SCHEMES.items():
            print(n, s)
        return 0
    if not a.model:
        ap.error("--model DIR is required")
    corpus = fidelity.load_corpus()
    ref = load_reference(a.model, corpus, a.threads)
    sim = Sim(a.model, a.threads, a.batch_size)
    results = {}
    if a.json and Path(a.json).is_file():
        results = json.loads(Path(a.json).read_text())

    def save():
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=1))

    print(HEAD, flush=True)
    if a.validate:
        if a.float_check:  # the simulator with no quantization: batching / padding noise
            sim.restore()
            q0, d0 = sim.encode(corpus.queries, corpus.docs)
            r = figures(q0, d0, ref, corpus)
            print(f"float (no quantization, batched): worst {r['worst_cos']:.9f} mean {r['mean_cos']:.9f}", flush=True)
            results["float_batched"] = r
        for name, isa in (("shipped_a8", "scalar"), ("shipped_a7", "avx2")):
            sch = SCHEMES[name]
            rs, q, d, secs = run_scheme(sim, name, sch, ref, corpus)
            eq, ed, esecs = engine_embeddings(a.model, isa, corpus, a.threads)
            re = figures(eq, ed, ref, corpus, esecs)
            c = np.concatenate([cos_rows(q, eq), cos_rows(d, ed)])
            print(row(name + " (sim)", sch, rs, secs))
            print(row(f"engine int8 {isa}", sch, re, esecs))
            print(f"  sim vs engine {isa}: worst cos {c.min():.8f}, mean 1-cos {1 - c.mean():.2e}; "
                  f"1-mean cos to ref sim {1 - rs['mean_cos']:.3e} engine {1 - re['mean_cos']:.3e}", flush=True)
            results[name] = rs
            results[f"engine_{isa}"] = re
            results[f"sim_vs_engine_{isa}"] = {"worst_cos": float(c.min()), "mean_cos": float(c.mean())}
            save()
        return 0
    if a.sensitivity:
        act = a.sensitivity
        sim.calibrate()
        gains = sensitivity(sim, act, CACHE / f"sensitivity_{act}.json")
        order = list(np.argsort(-np.asarray(gains)))
        print("layers by measured gain:", order, flush=True)
        for n in (3, 4, 6):
            top = tuple(int(x) for x in order[:n])
            sch = Scheme(act=act, tail=0, float_layers=top, note=f"measured top-{n} layers f32")
            name = f"sens{n}_{act}"
            r, *_ , secs = run_scheme(sim, name, sch, ref, corpus)
            r["float_layers"] = list(top)
            results[name] = r
            print(row(name, sch, r, secs), f"layers {sorted(top)}", flush=True)
            save()
        return 0
    names = [n.strip() for n in a.schemes.split(",") if n.strip()] or list(SCHEMES)
    for name in names:
        sch = SCHEMES[name]
        r, *_ , secs = run_scheme(sim, name, sch, ref, corpus)
        results[name] = r
        print(row(name, sch, r, secs), flush=True)
        save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
