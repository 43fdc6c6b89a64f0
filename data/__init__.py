"""medim data: one call, `load_pairs(name, split, ...)`, for every data source; each returns a Sequence of
`data.common.Pair` (image uint8 already square-resized, report text, domain tag, uid, labels, meta).

Sources (docs/data.md):
  synthetic        toy chest X-rays with template reports (data/synthetic.py), the default; no files needed
  synthetic-path   toy H&E pathology patches with PathGen-style captions (data/synthetic.py)
  mimic            MIMIC-CXR-JPG 2.0.0 tree, R2Gen annotation.json (MIMIC or IU X-ray) or MeDiM flat folders (data/mimic.py)
  pathgen          PathGen json/jsonl + patches, or flat png+txt folders (data/pathgen.py)
  folder           your own pairs: images + same-stem .txt reports, pairs.jsonl or pairs.csv (data/folder.py)
Comma-separated names concatenate sources for mixed-domain training, as MeDiM trains MIMIC-CXR and PathGen in one run
(MeDiM §3.1), with a domain tag per pair instead of MeDiM's size string (docs/paper-notes.md "The official code: quirks
and what medim does instead"). `sampling_weights`
rebalances domains (MeDiM itself subsampled PathGen to balance; a weighted sampler does it without dropping data).
"""
import bisect
import inspect
from collections import Counter
from collections.abc import Sequence

import numpy as np

from .common import DOMAINS, Pair, square_resize  # noqa: F401  (re-exported: data.Pair, data.square_resize)
from .folder import load_folder
from .mimic import load_mimic
from .pathgen import load_pathgen
from .records import canonical_split

REAL_LOADERS = {"mimic": load_mimic, "pathgen": load_pathgen, "folder": load_folder}
SYNTHETIC_DOMAINS = {"synthetic": "cxr", "synthetic-path": "path"}
NAMES = tuple(SYNTHETIC_DOMAINS) + tuple(REAL_LOADERS)


def _synthetic_dataset():
    from .synthetic import SyntheticDataset  # lazy: data/synthetic.py is another module; real loaders work without it
    return SyntheticDataset


def _option_defaults(name: str) -> dict:
    """{option: default} that source `name` accepts beyond the common arguments."""
    if name in REAL_LOADERS:
        params = inspect.signature(REAL_LOADERS[name]).parameters.values()
        return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}
    params = inspect.signature(_synthetic_dataset()).parameters.values()
    return {p.name: p.default for p in params if p.name not in ("self", "domain", "split", "n", "image_size", "seed")}


def _check_options(names: list[str], options: dict) -> dict[str, dict]:
    """Each requested source gets the options it takes. An option only another source takes is ignored while it has
    that source's default value (so a script may always pass e.g. shuffle_sentences=False), else it is an error."""
    known = {n: _option_defaults(n) for n in set(names)}
    others = {}  # option -> the defaults of the other sources taking it (mimic and folder both take `section`)
    for n in set(NAMES) - set(names):
        try:
            for key, default in _option_defaults(n).items():
                others.setdefault(key, []).append(default)
        except ImportError:  # data/synthetic.py missing: its options are simply unknown
            pass
    for key, value in options.items():
        if any(key in k for k in known.values()):
            continue
        if key in others and value in others[key]:
            continue
        where = "it belongs to another source" if key in others else "no source takes it"
        raise ValueError(f"option {key}={value!r} does not apply to --data {','.join(names)} ({where}); options they "
                         f"take: {sorted(set().union(*known.values()))}")
    return {n: {k: v for k, v in options.items() if k in known[n]} for n in set(names)}


def _aligned_dirs(names: list[str], data_dir) -> list:
    """data_dir aligned with names: 'mimic,pathgen' + 'A,B'; synthetic entries need none, so 'synthetic,mimic' + 'A'
    (one dir per real source, in order) also works, as does ',A'."""
    dirs = [d.strip() or None for d in str(data_dir).split(",")] if data_dir not in (None, "") else []
    real = [n for n in names if n in REAL_LOADERS]
    if not dirs:
        return [None] * len(names)  # a real source without a dir raises its own error, naming its layouts
    if len(dirs) == len(names):
        return dirs
    if len(dirs) == len(real):
        it = iter(dirs)
        return [next(it) if n in REAL_LOADERS else None for n in names]
    raise ValueError(f"--data {','.join(names)} needs {len(real)} data dir(s) (comma-separated, one per "
                     f"{'/'.join(real) or 'real source'}); got {len(dirs)}: {data_dir!r}")


def load_pairs(name: str, split: str, data_dir=None, image_size: int = 64, seed: int = 0, limit: int | None = None,
               cache_dir=None, **options) -> Sequence:
    """Pairs of one split ('train' | 'val' | 'test'; 'validate' accepted) from one source or several ('mimic,pathgen').

    limit: a seeded random subset of that many items per source (before images are read).
    cache_dir: where real loaders keep their pre-processed image stacks (default <data_dir>/.cache).
    options: passed to every source whose loader takes them (see load_mimic / load_pathgen / SyntheticDataset);
    an option no requested source takes is an error, unless it is another source's option at its default value."""
    names = [n.strip().lower() for n in str(name).split(",") if n.strip()]
    unknown = [n for n in names if n not in NAMES]
    if not names or unknown:
        raise ValueError(f"unknown data source {unknown or name!r}; choose from {NAMES} (comma-separated to mix)")
    split = canonical_split(split)
    dirs = _aligned_dirs(names, data_dir)
    per_source = _check_options(names, options)
    parts = []
    for n, d in zip(names, dirs):
        mine = per_source[n]
        if n in SYNTHETIC_DOMAINS:
            parts.append(_synthetic_dataset()(domain=SYNTHETIC_DOMAINS[n], split=split, n=limit,
                                              image_size=image_size, seed=seed, **mine))
        else:
            parts.append(REAL_LOADERS[n](split, d, image_size=image_size, seed=seed, limit=limit, cache_dir=cache_dir,
                                         **mine))
    return parts[0] if len(parts) == 1 else ConcatPairs(parts)


def parse_options(text: str) -> dict:
    """Loader options written as "key=value,..." (train.py --data-options) as keyword arguments for load_pairs: true /
    false become booleans, digit strings ints, anything else stays a string."""
    options = {}
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"loader options are key=value pairs separated by commas, got {item!r}")
        low = value.lower()
        options[key.strip()] = True if low == "true" else False if low == "false" else \
            int(value) if value.isdigit() else value.strip()
    return options


#################################################################################
#                          Mixed domains: concat + weights                      #
#################################################################################

class ConcatPairs(Sequence):
    """Several pair sequences one after the other (index i -> the part holding it)."""

    def __init__(self, parts: list[Sequence]):
        self.parts = parts
        self.ends = np.cumsum([len(p) for p in parts]).tolist()

    def __len__(self):
        return self.ends[-1] if self.ends else 0

    def __getitem__(self, i) -> Pair:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} pairs")
        k = bisect.bisect_right(self.ends, i)
        return self.parts[k][i - (self.ends[k - 1] if k else 0)]

    @property
    def domains(self) -> list[str]:
        return [d for p in self.parts for d in domains_of(p)]


def domains_of(pairs: Sequence) -> list[str]:
    """The domain of every item, without decoding images when the sequence knows them (.domains or one .domain)."""
    if hasattr(pairs, "domains"):
        return list(pairs.domains)
    if isinstance(getattr(pairs, "domain", None), str):
        return [pairs.domain] * len(pairs)
    return [p.domain for p in pairs]


def sampling_weights(pairs: Sequence, weights: dict[str, float]) -> np.ndarray:
    """Per-item sampling probabilities (float64, sum 1) giving each domain a share of draws proportional to
    `weights[domain]`, whatever its size: {'cxr': 1, 'path': 1} draws CXR and pathology equally often.
    Use with torch.utils.data.WeightedRandomSampler(p, num_samples) or np.random.Generator.choice(len(p), p=p)."""
    domains = domains_of(pairs)
    counts = Counter(domains)
    missing = sorted(set(counts) - set(weights))
    if missing:
        raise ValueError(f"sampling_weights: no weight for domain(s) {missing}; the data has {dict(counts)}")
    if any(weights[d] < 0 for d in counts) or not any(weights[d] > 0 for d in counts):
        raise ValueError(f"sampling_weights: weights must be >= 0 with one > 0, got {weights}")
    p = np.array([weights[d] / counts[d] for d in domains], dtype=np.float64)
    return p / p.sum()
