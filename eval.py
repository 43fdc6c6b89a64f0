"""Evaluation for MeDiM, self-contained (torch / numpy / scipy only).

Report metrics exactly as the reference tools compute them (NLTK sentence BLEU + METEOR as in MeDiM's report_metric.py,
pycocoevalcap corpus BLEU / ROUGE-L / CIDEr-D as in R2Gen), FID with the pytorch-fid Inception-v3, and the synthetic-data
metrics that make the default run measurable offline (oracle classifier, FD-oracle, label F1).
Definitions and golden numbers: shared/metrics-spec.md; protocol: shared/medim-spec.md §8.
"""
import os

import numpy as np

#### Text metrics: BLEU, METEOR, ROUGE-L, CIDEr-D  (owner: eval-text helper)
# Every function below re-implements one reference tool so that it agrees to 1e-9 (tests/test_eval_text.py checks
# against NLTK 3.9.1, pycocoevalcap 1.2 and rouge 1.0.1). The quirks kept on purpose are listed in
# shared/metrics-spec.md §1-§5. Token-level functions take lists of str; the coco_* functions take {id: [str]} dicts
# exactly like pycocoevalcap.
import math
import re
import sys
from collections import Counter
from functools import lru_cache


def medim_tokens(text: str) -> list[str]:
    """MeDiM report_metric.py `prep_reports`: lowercase, '.' -> ' .', split on ' ' only (so tabs and newlines stay
    inside tokens), drop ''."""
    return [t for t in text.lower().replace(".", " .").split(" ") if t != ""]


def _ngrams(tokens, n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _clipped_matches(references, hypothesis, n: int) -> tuple[int, int]:
    """BLEU's modified n-gram precision as NLTK's unreduced fraction: (clipped matches, max(1, #hypothesis n-grams))."""
    hyp, max_ref = _ngrams(hypothesis, n), Counter()
    for ref in references:
        max_ref |= _ngrams(ref, n)  # Counter union keeps the max count of each n-gram over references
    return sum(min(c, max_ref[g]) for g, c in hyp.items()), max(1, sum(hyp.values()))


def _closest_ref_length(references, hyp_len: int) -> int:
    if len(references) == 0:
        raise ValueError("BLEU: every hypothesis needs at least one reference")
    return min((abs(len(r) - hyp_len), len(r)) for r in references)[1]  # a tie goes to the shorter reference


def corpus_bleu(list_of_references, hypotheses, weights=(0.25, 0.25, 0.25, 0.25), smoothing: str = "method0"):
    """NLTK 3.9.1 `corpus_bleu` (metrics-spec §2.1). Numerators and denominators are summed over the corpus before
    dividing; r sums the closest reference lengths. `weights` may be one tuple (returns a float) or a list of tuples
    (returns a list). smoothing: 'method0' (NLTK's default: a zero precision becomes sys.float_info.min, so the score is
    tiny but not 0) or 'method1' (Chen & Cherry 2014: a zero precision becomes 0.1 / denominator).
    NLTK's auto_reweigh option is not ported."""
    if len(list_of_references) != len(hypotheses):
        raise ValueError(f"corpus_bleu: {len(hypotheses)} hypotheses but {len(list_of_references)} reference lists")
    if smoothing not in ("method0", "method1"):
        raise ValueError(f"corpus_bleu: smoothing must be 'method0' or 'method1', got {smoothing!r}")
    several = isinstance(weights[0], (tuple, list))
    weight_sets = list(weights) if several else [weights]
    N = max(len(w) for w in weight_sets)
    matches, totals, hyp_len, ref_len = [0] * N, [0] * N, 0, 0
    for references, hypothesis in zip(list_of_references, hypotheses):
        for n in range(1, N + 1):
            m, t = _clipped_matches(references, hypothesis, n)
            matches[n - 1] += m
            totals[n - 1] += t
        hyp_len += len(hypothesis)
        ref_len += _closest_ref_length(references, len(hypothesis))
    if matches[0] == 0:  # NLTK exits early with the int 0 when no unigram matches, whatever the smoothing
        return [0] * len(weight_sets) if several else 0
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)  # brevity penalty; exactly 1 when c == r
    zero = [sys.float_info.min] * N if smoothing == "method0" else [0.1 / t for t in totals]
    p = [m / t if m else z for m, t, z in zip(matches, totals, zero)]
    # BLEU = BP · exp(Σ_n w_n · log p_n)  (Papineni et al. 2002, eq. in §2.3; metrics-spec §2.1)
    scores = [bp * math.exp(math.fsum(w * math.log(p_n) for w, p_n in zip(ws, p) if p_n > 0)) for ws in weight_sets]
    return scores if several else scores[0]


def sentence_bleu(references, hypothesis, weights=(0.25, 0.25, 0.25, 0.25), smoothing: str = "method0"):
    """NLTK `sentence_bleu` = corpus_bleu of a one-sentence corpus. MeDiM: smoothing='method1', weights 1/n."""
    return corpus_bleu([references], [hypothesis], weights, smoothing)


def coco_bleu(gts: dict, res: dict, n: int = 4) -> tuple[list[float], list[list[float]]]:
    """pycocoevalcap 1.2 `Bleu(4).compute_score(gts, res)`, the R2Gen protocol (metrics-spec §2.2): strings split on
    whitespace, 'closest' reference length, tiny=1e-15 added to matches and small=1e-9 to guesses (so a zero count
    gives a tiny positive score, never 0). Returns (corpus [BLEU-1..n], per-sample [[BLEU-k of each id] for k])."""
    if gts.keys() != res.keys():
        raise ValueError("coco_bleu: gts and res must have the same ids")
    tiny, small = 1e-15, 1e-9
    correct, guess, test_len, ref_len, per_sample = [0] * n, [0] * n, 0, 0, [[] for _ in range(n)]
    for key in gts:
        hyp, refs = res[key][0].split(), [r.split() for r in gts[key]]
        c = [_clipped_matches(refs, hyp, k)[0] for k in range(1, n + 1)]
        g = [max(0, len(hyp) - k + 1) for k in range(1, n + 1)]
        r = _closest_ref_length(refs, len(hyp))
        bleu, ratio = 1.0, (len(hyp) + tiny) / (r + small)
        for k in range(n):
            bleu *= (c[k] + tiny) / (g[k] + small)
            per_sample[k].append(bleu ** (1.0 / (k + 1)) * (math.exp(1 - 1 / ratio) if ratio < 1 else 1.0))
            correct[k] += c[k]
            guess[k] += g[k]
        test_len, ref_len = test_len + len(hyp), ref_len + r
    bleu, ratio, corpus = 1.0, (test_len + tiny) / (ref_len + small), []
    for k in range(n):
        bleu *= (correct[k] + tiny) / (guess[k] + small)
        corpus.append(bleu ** (1.0 / (k + 1)) * (math.exp(1 - 1 / ratio) if ratio < 1 else 1.0))
    return corpus, per_sample


# Porter (1980) stemmer in NLTK 3.9.1's default NLTK_EXTENSIONS mode (metrics-spec §3.2) for METEOR's stem stage.
_PORTER_IRREGULAR = {"skies": "sky", "sky": "sky", "dying": "die", "lying": "lie", "tying": "tie", "news": "news",
                     "innings": "inning", "inning": "inning", "outings": "outing", "outing": "outing",
                     "cannings": "canning", "canning": "canning", "howe": "howe", "proceed": "proceed",
                     "exceed": "exceed", "succeed": "succeed"}


def _cv(w: str) -> str:
    """'c'/'v' for each letter; Porter's y is a consonant at the start or after a vowel, a vowel after a consonant."""
    out = ""
    for i, ch in enumerate(w):
        out += "v" if ch in "aeiou" else "c" if ch != "y" or i == 0 or out[-1] == "v" else "v"
    return out


def _measure(stem: str) -> int:
    return _cv(stem).count("vc")  # m in [C](VC)^m[V]


def _ends_double_consonant(w: str) -> bool:
    return len(w) >= 2 and w[-1] == w[-2] and _cv(w)[-1] == "c"


def _ends_cvc(w: str) -> bool:  # NLTK extension: a 2-letter vowel-consonant word counts too
    return (len(w) >= 3 and _cv(w)[-3:] == "cvc" and w[-1] not in "wxy") or (len(w) == 2 and _cv(w) == "vc")


def _apply_rules(word: str, rules) -> str:
    """The first rule whose suffix matches decides; a false condition leaves the word as it is.
    '*d' stands for a double consonant."""
    for suffix, replacement, condition in rules:
        if suffix == "*d" and _ends_double_consonant(word):
            return word[:-2] + replacement if condition is None or condition(word[:-2]) else word
        if word.endswith(suffix):
            stem = word[:len(word) - len(suffix)]
            return stem + replacement if condition is None or condition(stem) else word
    return word


def _step1b(w: str) -> str:
    if w.endswith("ied"):
        return w[:-3] + ("ie" if len(w) == 4 else "i")
    if w.endswith("eed"):
        return w[:-3] + "ee" if _measure(w[:-3]) > 0 else w
    for suffix in ("ed", "ing"):
        stem = w[:-len(suffix)]
        if w.endswith(suffix) and "v" in _cv(stem):
            return _apply_rules(stem, [("at", "ate", None), ("bl", "ble", None), ("iz", "ize", None),
                                       ("*d", stem[-1], lambda s: stem[-1] not in "lsz"),
                                       ("", "e", lambda s: _measure(s) == 1 and _ends_cvc(s))])
    return w


def _step2(w: str) -> str:
    if w.endswith("alli") and _measure(w[:-4]) > 0:
        return _step2(w[:-4] + "al")
    m0 = lambda s: _measure(s) > 0
    return _apply_rules(w, [(a, b, m0) for a, b in (
        ("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"), ("izer", "ize"), ("bli", "ble"),
        ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous"), ("ization", "ize"), ("ation", "ate"),
        ("ator", "ate"), ("alism", "al"), ("iveness", "ive"), ("fulness", "ful"), ("ousness", "ous"), ("aliti", "al"),
        ("iviti", "ive"), ("biliti", "ble"), ("fulli", "ful"))] + [("logi", "log", lambda s: _measure(w[:-3]) > 0)])


def _porter_steps(w: str) -> str:
    m0, m1 = (lambda s: _measure(s) > 0), (lambda s: _measure(s) > 1)
    w = w[:-3] + "ie" if w.endswith("ies") and len(w) == 4 else \
        _apply_rules(w, [("sses", "ss", None), ("ies", "i", None), ("ss", "ss", None), ("s", "", None)])  # 1a
    w = _step1b(w)
    w = _apply_rules(w, [("y", "i", lambda s: len(s) > 1 and _cv(s)[-1] == "c")])  # 1c
    w = _step2(w)
    w = _apply_rules(w, [(a, b, m0) for a, b in (("icate", "ic"), ("ative", ""), ("alize", "al"), ("iciti", "ic"),
                                                  ("ical", "ic"), ("ful", ""), ("ness", ""))])  # 3
    w = _apply_rules(w, [(a, "", m1) for a in ("al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement",
                                               "ment", "ent")] + [("ion", "", lambda s: m1(s) and s[-1] in "st")]
                     + [(a, "", m1) for a in ("ou", "ism", "ate", "iti", "ous", "ive", "ize")])  # 4
    if w.endswith("e") and (_measure(w[:-1]) > 1 or (_measure(w[:-1]) == 1 and not _ends_cvc(w[:-1]))):  # 5a
        w = w[:-1]
    return _apply_rules(w, [("ll", "l", lambda s: _measure(w[:-1]) > 1)])  # 5b


@lru_cache(maxsize=1 << 16)
def porter_stem(word: str) -> str:
    """NLTK `PorterStemmer().stem(word)` (NLTK_EXTENSIONS). The irregular table and the length test see the raw word."""
    if word in _PORTER_IRREGULAR:
        return _PORTER_IRREGULAR[word]
    return word.lower() if len(word) <= 2 else _porter_steps(word.lower())


class WordNet:
    """Reader for the Princeton WordNet 3.0 database files (wndb(5): index.<pos>, data.<pos>, <pos>.exc), doing what
    NLTK's `wordnet.synsets(word)` + `lemma.name()` do for METEOR (metrics-spec §3.3). `root` is a directory such
    as /usr/share/wordnet from Debian's wordnet-base package (PyPI has no WordNet data; NLTK downloads it)."""
    POS = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}  # NLTK's search order
    MORPHY = {"n": [("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
                    ("men", "man"), ("ies", "y")],
              "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"),
                    ("ing", "")],
              "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")], "r": []}

    def __init__(self, root: str):
        self.root, self.index, self.exceptions, self._names, self._synonyms = root, {}, {}, {}, {}
        for pos, name in self.POS.items():
            for fname in (f"index.{name}", f"data.{name}", f"{name}.exc"):
                if not os.path.isfile(os.path.join(root, fname)):
                    raise FileNotFoundError(f"WordNet dir {root!r} lacks {fname} (WordNet 3.0 index/data/exc files)")
            with open(os.path.join(root, f"index.{name}"), encoding="utf8") as f:
                for line in f:
                    if not line.startswith(" "):  # lines starting with a space are the license header
                        # lemma pos n_synsets n_pointers [pointer symbols] n_senses n_tagged_senses [offsets]
                        fields = line.split()
                        first, n = 6 + int(fields[3]), int(fields[2])
                        self.index.setdefault(fields[0], {})[fields[1]] = [int(o) for o in fields[first:first + n]]
            with open(os.path.join(root, f"{name}.exc"), encoding="utf8") as f:
                self.exceptions[pos] = {t[0]: t[1:] for t in map(str.split, f) if t}

    def synsets(self, word: str) -> list[tuple[str, int]]:
        """(pos, offset) of every synset of `word` and of its morphy forms (exception list, else suffix rules once)."""
        word, out = word.lower(), []
        for pos in self.POS:
            exc = self.exceptions[pos]
            forms = exc[word] if word in exc else [word[:-len(a)] + b for a, b in self.MORPHY[pos] if word.endswith(a)]
            for form in dict.fromkeys([word] + forms):  # dedupe, keep order
                out += [(pos, o) for o in self.index.get(form, {}).get(pos, [])]
        return out

    def lemma_names(self, pos: str, offset: int) -> list[str]:
        """Word fields of the data.<pos> line at byte `offset`, with adjective markers like '(a)' removed; case kept."""
        if (pos, offset) not in self._names:
            with open(os.path.join(self.root, f"data.{self.POS[pos]}"), "rb") as f:
                f.seek(offset)
                # offset lex_filenum ss_type w_cnt [word lex_id]... p_cnt ... | gloss
                fields = f.readline().decode("utf8").split("|")[0].split()
            words = fields[4:4 + 2 * int(fields[3], 16):2]
            self._names[pos, offset] = [re.match(r"(.*?)(\(.*\))?$", w).group(1) for w in words]
        return self._names[pos, offset]

    def synonyms(self, word: str) -> set[str]:
        """NLTK METEOR's candidate set: the word plus every lemma name without '_' of every synset of the word."""
        if word not in self._synonyms:
            names = {n for ss in self.synsets(word) for n in self.lemma_names(*ss) if "_" not in n}
            self._synonyms[word] = names | {word}
        return self._synonyms[word]


_WORDNETS: dict = {}


def load_wordnet(wordnet="auto"):
    """Resolve METEOR's synonym source: a WordNet, a directory, None (stage skipped), or 'auto' = $MEDIM_WORDNET,
    else /usr/share/wordnet when Debian's wordnet-base is installed, else None. Readers are cached per directory."""
    if wordnet is None or isinstance(wordnet, WordNet):
        return wordnet
    if wordnet == "auto":
        debian = "/usr/share/wordnet"
        wordnet = os.environ.get("MEDIM_WORDNET") or (debian if os.path.isfile(f"{debian}/index.noun") else None)
        if wordnet is None:
            return None
    if not os.path.isdir(wordnet):
        raise FileNotFoundError(f"WordNet directory {wordnet!r} (argument or $MEDIM_WORDNET) does not exist")
    if wordnet not in _WORDNETS:
        _WORDNETS[wordnet] = WordNet(wordnet)
    return _WORDNETS[wordnet]


def _match_reverse_greedy(hyp: list, ref: list, same) -> list[tuple[int, int]]:
    """NLTK `_match_enums`: each hypothesis word, last to first, takes the highest-position unused reference word with
    same(h, r). Matched (position, word) items are popped from both lists in place. The order decides the chunks."""
    matches = []
    for i in range(len(hyp))[::-1]:
        for j in range(len(ref))[::-1]:
            if same(hyp[i][1], ref[j][1]):
                matches.append((hyp[i][0], ref[j][0]))
                hyp.pop(i), ref.pop(j)
                break
    return matches


def single_meteor_score(reference, hypothesis, wordnet=None, alpha=0.9, beta=3.0, gamma=0.5) -> float:
    """NLTK 3.9.1 `single_meteor_score` on token lists (metrics-spec §3.1): lowercase, then exact, Porter-stem and
    (when `wordnet` is a WordNet) synonym matches, each stage reverse greedy. Quirk kept: the synonym stage looks
    up the *stems*. score = (1 - γ·(chunks/m)^β) · PR/(αP + (1-α)R); 0.0 if a side is empty or nothing matches.
    Without WordNet this is NLTK run with a wordnet whose synsets() is empty ('exact+stem')."""
    if isinstance(reference, str) or isinstance(hypothesis, str):
        raise TypeError("single_meteor_score expects token lists, not strings (as NLTK >= 3.6.6)")
    hyp, ref = list(enumerate(w.lower() for w in hypothesis)), list(enumerate(w.lower() for w in reference))
    hyp_len, ref_len = len(hyp), len(ref)
    matches = _match_reverse_greedy(hyp, ref, str.__eq__)
    hyp, ref = [(i, porter_stem(w)) for i, w in hyp], [(i, porter_stem(w)) for i, w in ref]
    matches += _match_reverse_greedy(hyp, ref, str.__eq__)
    if wordnet is not None:
        matches += _match_reverse_greedy(hyp, ref, lambda h, r: r in wordnet.synonyms(h))
    matches.sort(key=lambda pair: pair[0])
    m = len(matches)
    if hyp_len == 0 or ref_len == 0 or m == 0:
        return 0.0
    chunks = 1 + sum(not (b[0] == a[0] + 1 and b[1] == a[1] + 1) for a, b in zip(matches, matches[1:]))
    precision, recall = float(m) / hyp_len, float(m) / ref_len
    fmean = (precision * recall) / (alpha * precision + (1 - alpha) * recall)
    return (1 - gamma * (float(chunks) / m) ** beta) * fmean


def meteor_score(references, hypothesis, wordnet=None, alpha=0.9, beta=3.0, gamma=0.5) -> float:
    """NLTK `meteor_score`: the best single_meteor_score over the references."""
    return max(single_meteor_score(r, hypothesis, wordnet, alpha, beta, gamma) for r in references)


def _lcs_table(a: list, b: list) -> list[list[int]]:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]  # table[i][j] = LCS length of a[:i], b[:j]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
    return table


def coco_rouge_l(gts: dict, res: dict, beta: float = 1.2) -> tuple[float, list[float]]:
    """pycocoevalcap 1.2 `Rouge().compute_score(gts, res)` (R2Gen, metrics-spec §4.1): tokens from split(' '),
    max precision and max recall over references taken independently, F_β with β=1.2. Returns (mean, per-sample)."""
    if gts.keys() != res.keys():
        raise ValueError("coco_rouge_l: gts and res must have the same ids")
    scores = []
    for key in gts:
        cand = res[key][0].split(" ")
        lcs = [_lcs_table(r.split(" "), cand)[-1][-1] for r in gts[key]]
        p = max(l / len(cand) for l in lcs)
        r = max(l / len(ref.split(" ")) for l, ref in zip(lcs, gts[key]))
        scores.append(((1 + beta ** 2) * p * r) / float(r + beta ** 2 * p) if p != 0 and r != 0 else 0.0)
    return float(np.mean(scores)), scores


def _rouge_sentences(text: str) -> list[str]:
    """`rouge` 1.0.1 sentence split: pieces between '.', non-empty before whitespace is squeezed (so ' ' -> '')."""
    return [" ".join(s.split()) for s in text.split(".") if len(s) > 0]


def rouge_l_f1(hypothesis: str, reference: str) -> float:
    """`rouge` 1.0.1 `Rouge().get_scores(hyp, ref)[0]['rouge-l']['f']`, MeDiM's R-L (metrics-spec §4.2): summary-level
    union-LCS with *set* semantics, F1 with +1e-8. Raises ValueError on a hypothesis or reference without a
    sentence ('', '.', ...), as `rouge` does."""
    hyp, ref = _rouge_sentences(hypothesis), _rouge_sentences(reference)
    if not hyp or not ref:
        raise ValueError(f"rouge_l_f1: {'hypothesis' if not hyp else 'reference'} has no sentence")
    n = len({w for s in hyp for w in s.split(" ")})  # distinct words
    m = len({w for s in ref for w in s.split(" ")})
    union = set()
    for ref_s in ref:
        x = ref_s.split(" ")
        for hyp_s in hyp:  # rebuild one LCS the way rouge's recursive _recon does (ties step left, in the hypothesis)
            y = hyp_s.split(" ")
            table, i, j = _lcs_table(x, y), len(x), len(y)
            while i > 0 and j > 0:
                if x[i - 1] == y[j - 1]:
                    union.add(x[i - 1])
                    i, j = i - 1, j - 1
                elif table[i - 1][j] > table[i][j - 1]:
                    i -= 1
                else:
                    j -= 1
    p, r = len(union) / n, len(union) / m
    return 2.0 * ((p * r) / (p + r + 1e-8))


def coco_cider(gts: dict, res: dict, n: int = 4, sigma: float = 6.0) -> tuple[float, list[float]]:
    """pycocoevalcap 1.2 `Cider().compute_score(gts, res)`, i.e. CIDEr-D (metrics-spec §5): tf-idf n-gram vectors
    (df = #images whose references hold the n-gram), clipped cosine per order, Gaussian length penalty on the
    bigram-count 'length', ×10, mean over orders and references. The idf needs the whole set: one image scores 0."""
    if gts.keys() != res.keys():
        raise ValueError("coco_cider: gts and res must have the same ids")
    grams = lambda s: sum((_ngrams(s.split(), k) for k in range(1, n + 1)), Counter())  # all orders, raw counts
    refs = [[grams(r) for r in gts[key]] for key in gts]
    df = Counter(g for image_refs in refs for g in set().union(*image_refs))
    log_n = np.log(float(len(refs)))

    def tfidf(counts):  # per-order {n-gram: weight}, per-order L2 norm, #bigrams
        vec, norm = [{} for _ in range(n)], [0.0] * n
        for g, tf in counts.items():
            vec[len(g) - 1][g] = w = float(tf) * (log_n - np.log(max(1.0, df[g])))
            norm[len(g) - 1] += w ** 2
        return vec, [np.sqrt(x) for x in norm], sum(tf for g, tf in counts.items() if len(g) == 2)

    scores = []
    for key, image_refs in zip(gts, refs):
        vh, nh, lh = tfidf(grams(res[key][0]))
        total = np.zeros(n)
        for ref_counts in image_refs:
            vr, nr, lr = tfidf(ref_counts)
            for k in range(n):
                val = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vh[k].items())
                if nh[k] != 0 and nr[k] != 0:
                    val /= nh[k] * nr[k]
                total[k] += val * np.e ** (-(float(lh - lr) ** 2) / (2 * sigma ** 2))
        scores.append(float(np.mean(total)) / len(image_refs) * 10.0)
    return float(np.mean(scores)), scores


def report_metrics(generated: list[str], references: list[str], wordnet="auto", skip_unscorable: bool = True) -> dict:
    """Report-generation metrics under MeDiM's report_metric.py protocol (metrics-spec §0), plus R2Gen's COCO ones.

    Both texts are .strip()ped (the script strips file contents) and tokenised by `medim_tokens`.
      bleu1..bleu4   mean over samples of NLTK sentence BLEU-n, method1 smoothing, weights 1/n (MeDiM)
      meteor         mean of NLTK single_meteor_score; `meteor_stages` says whether the WordNet stage ran
                     ('exact+stem+wordnet') or not ('exact+stem', no WordNet found: see load_wordnet)
      rouge_l        mean of `rouge` 1.0.1 ROUGE-L F1 on the lowercased strings (MeDiM's R-L, as in the paper's table)
      rouge_l_coco   pycocoevalcap ROUGE-L (β=1.2) mean; coco_bleu1..4 pycocoevalcap corpus BLEU (the R2Gen protocol)
      cider          pycocoevalcap CIDEr-D over the scored set
    COCO metrics see the MeDiM tokens joined by single spaces. This METEOR is NOT R2Gen's Java METEOR 1.5 (α .85,
    β .2, γ .6, function-word weights, paraphrases): NLTK's runs ~1.6-1.9x higher, so never compare the two.
    Unscorable samples: MeDiM skips an empty generation and any sample on which `rouge` raises (a text with no
    sentence: '.', '...', empty reference) from ALL means. skip_unscorable=False instead scores them 0 in the
    per-sample means and keeps them in the corpus metrics. n = samples in the means, n_unscorable = such samples.
    With nothing to score every metric is nan.
    Not reproduced: the script also drops a sample when `rouge`'s recursive LCS hits Python's recursion limit
    (a period-free sentence pair of roughly 1000 words)."""
    if len(generated) != len(references):
        raise ValueError(f"report_metrics: {len(generated)} generated reports but {len(references)} references")
    wn = load_wordnet(wordnet)
    weights = [(1.0,), (0.5, 0.5), (1 / 3,) * 3, (0.25,) * 4]
    per_sample, gts, res, skipped = [], {}, {}, 0
    for i, (gen, ref) in enumerate(zip(generated, references)):
        gen, ref = gen.strip(), ref.strip()
        gen_tok, ref_tok = medim_tokens(gen), medim_tokens(ref)
        scorable = gen != "" and bool(_rouge_sentences(gen.lower())) and bool(_rouge_sentences(ref.lower()))
        skipped += not scorable
        if not scorable and skip_unscorable:
            continue
        gts[i], res[i] = [" ".join(ref_tok)], [" ".join(gen_tok)]
        if not scorable:
            per_sample.append([0.0] * 6)
            continue
        bleus = sentence_bleu([ref_tok], gen_tok, weights, smoothing="method1")
        per_sample.append(bleus + [single_meteor_score(ref_tok, gen_tok, wn), rouge_l_f1(gen.lower(), ref.lower())])
    out = {"n": len(per_sample), "n_unscorable": skipped,
           "meteor_stages": "exact+stem" if wn is None else "exact+stem+wordnet"}
    if not gts:
        nan = float("nan")
        return {**{k: nan for k in ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "rouge_l_coco", "cider",
                                    "coco_bleu1", "coco_bleu2", "coco_bleu3", "coco_bleu4")}, **out}
    means = np.mean(np.array(per_sample, dtype=np.float64), axis=0)
    coco_b = coco_bleu(gts, res)[0]
    return {"bleu1": float(means[0]), "bleu2": float(means[1]), "bleu3": float(means[2]), "bleu4": float(means[3]),
            "meteor": float(means[4]), "rouge_l": float(means[5]), "rouge_l_coco": coco_rouge_l(gts, res)[0],
            "cider": coco_cider(gts, res)[0], **{f"coco_bleu{k + 1}": coco_b[k] for k in range(4)}, **out}


#### Image metrics: FID (Inception-v3) and the oracle classifier  (owner: eval-image helper)
# FID as pytorch-fid 0.3.0 computes it (github.com/mseitzer/pytorch-fid: fid_score.py, inception.py), written from the
# architecture in metrics-spec §6 (Heusel et al. 2017, arXiv 1706.08500). The oracle classifier and FD-oracle are our
# offline stand-ins on synthetic data (data-spec §5.5): FD-oracle is NOT FID and must never be reported as FID.
import time

import scipy.linalg
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from PIL import Image


def stats(features):
    """(N, D) features -> (mu (D,), sigma (D, D)): mean and unbiased (N-1) covariance in float64, as pytorch-fid."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"stats: need features of shape (N >= 2, D), got {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (metrics-spec §6.1 step 6; FID is this d², no sqrt):

        d² = |mu1 - mu2|² + tr(sigma1) + tr(sigma2) - 2 tr sqrt(sigma1 sigma2)

    pytorch-fid's safeguards: if sqrtm is not finite (singular product, e.g. N < D), add eps·I to both covariances and retry;
    a complex result is accepted only when the diagonal's imaginary part is ~0 (atol 1e-3), then its real part is used."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"frechet_distance: shapes do not match: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)  # (D, D), maybe complex from round-off
    if not np.isfinite(covmean).all():
        print(f"frechet_distance: sqrtm(sigma1 @ sigma2) is not finite; adding {eps} to both covariance diagonals")
        offset = np.eye(len(mu1)) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: sqrtm has an imaginary component {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


# --- The FID Inception-v3: TF's 2015-12-05 graph in torchvision's module layout (metrics-spec §6.2). The names of every
# module below are the key names of the weight file, so load_state_dict needs no renaming (472 tensors, §6.3).
FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_FILE


class FrozenBatchNorm2d(nn.Module):
    """Inference-only BatchNorm with TF's eps 0.001. The FID net is never trained, and unlike nn.BatchNorm2d this holds
    exactly the 4 tensors per BN that the weight file holds (no num_batches_tracked)."""

    def __init__(self, n, eps=1e-3):
        super().__init__()
        self.eps = eps
        self.weight, self.bias = nn.Parameter(torch.ones(n)), nn.Parameter(torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BN -> ReLU: every conv of Inception-v3 is one of these."""

    def __init__(self, c_in, c_out, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride, padding, bias=False)
        self.bn = FrozenBatchNorm2d(c_out)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def tf_avg_pool(x):
    """3x3/1 average pool that, like TF, divides by the number of real (non-padding) pixels: count_include_pad=False.
    torchvision's Inception counts the zero padding; the FID weights were trained without it (difference (i) of §6.2)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):  # Mixed_5b..5d: 35x35
    def __init__(self, c_in, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = BasicConv2d(c_in, 48, 1), BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, 1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(tf_avg_pool(x))], 1)


class InceptionB(nn.Module):  # Mixed_6a: 35x35 -> 17x17 (same as torchvision)
    def __init__(self, c_in):
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionC(nn.Module):  # Mixed_6b..6e: 17x17 with factorised 7x7 convs
    def __init__(self, c_in, c7):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = conv(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(tf_avg_pool(x))], 1)


class InceptionD(nn.Module):  # Mixed_7a: 17x17 -> 8x8 (same as torchvision)
    def __init__(self, c_in):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = BasicConv2d(c_in, 192, 1), BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionE(nn.Module):
    """Mixed_7b (pytorch-fid's FIDInceptionE_1: TF average pool) and Mixed_7c (FIDInceptionE_2: a 3x3 MAX pool in the
    pool branch, difference (ii) of §6.2 — most likely a bug in the TF graph, but the weights were trained with it)."""

    def __init__(self, c_in, max_pool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(c_in, 320, 1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class InceptionV3FID(nn.Module):
    """pytorch-fid's InceptionV3 (output block 3): float images (B, 3, H, W) in [0, 1] -> pool3 features (B, 2048).
    Resized to 299x299 (bilinear, align_corners=False, no antialias), then scaled to [-1, 1] (no ImageNet transform_input).
    fc (1008 classes, difference (iii)) is unused here but kept so the weight file loads strictly."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = FIDInceptionA(192, 32), FIDInceptionA(256, 64), FIDInceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b, self.Mixed_6c = FIDInceptionC(768, c7=128), FIDInceptionC(768, c7=160)
        self.Mixed_6d, self.Mixed_6e = FIDInceptionC(768, c7=160), FIDInceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b, self.Mixed_7c = FIDInceptionE(1280, max_pool=False), FIDInceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)
        self.eval().requires_grad_(False)

    def forward(self, x):
        if x.shape[-2:] != (299, 299):  # an exact no-op at 299, so pre-resized batches give identical features
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1                                                                 # (B, 3, 299, 299) in [-1, 1]
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))            # (B, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)                                  # (B, 64, 73, 73)  block 0
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))                                 # (B, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)                                  # (B, 192, 35, 35) block 1
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a,
                      self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e):
            x = block(x)                                                              # (B, 768, 17, 17) block 2
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))                            # (B, 2048, 8, 8)
        return x.mean(dim=(2, 3))                                                     # (B, 2048) pool3, block 3


def load_fid_inception(weights_path=None, device="cpu"):
    """InceptionV3FID with the standard FID weights from a local file. weights_path=None looks where pytorch-fid's
    torch.hub download would have put it ($TORCH_HOME/hub/checkpoints/, default ~/.cache/torch/hub/checkpoints/)."""
    path = weights_path or os.path.join(torch.hub.get_dir(), "checkpoints", FID_WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"FID needs the Inception-v3 FID weight file {FID_WEIGHTS_FILE} (pytorch-fid's port of TF inception-2015-12-05); "
            f"not found at {path}. Download it (once, by hand) from {FID_WEIGHTS_URL} and pass its path with "
            f"--inception-weights PATH (python eval.py --fid DIR_A DIR_B --inception-weights PATH), "
            f"or put it at {os.path.join(torch.hub.get_dir(), 'checkpoints', FID_WEIGHTS_FILE)}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"could not read the FID weight file {path}: {e}") from None
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # present or not: we don't need it
    model = InceptionV3FID()
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"{path} is not the FID Inception weight file {FID_WEIGHTS_FILE}: "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shapes {wrong[:3]} "
                         f"({len(missing)}/{len(unexpected)}/{len(wrong)} in all)")
    model.load_state_dict(state, strict=True)
    return model.to(device)


IMAGE_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp")  # pytorch-fid's list, lowercase only


def image_files(folder):
    """Sorted image files of one folder, matched like pytorch-fid (lower-case extensions only, no recursion)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS)
    if len(files) < 2:
        raise ValueError(f"{folder}: FID needs at least 2 images ({', '.join(IMAGE_EXTENSIONS)}), found {len(files)}")
    return files


def read_rgb(path):
    """uint8 (H, W, 3). 16-bit PNGs are scaled to 8 bits first: convert('RGB') would saturate them to white (spec §6.1).
    (pytorch-fid does saturate them; we deliberately don't.)"""
    img = Image.open(path)
    if img.mode.startswith("I;16"):
        img = Image.fromarray((np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8))
    return np.asarray(img.convert("RGB"))


def inception_features(model, images, batch_size=50, device="cpu"):
    """Images (uint8 arrays (H, W) / (H, W, 3), or file paths) -> float64 (N, 2048) pool3 features, in batches like pytorch-fid.
    Each image is resized to 299 on its own (the same bilinear resize the model would do), so sizes may be mixed."""
    feats = []
    for i in range(0, len(images), batch_size):
        batch = []
        for im in images[i:i + batch_size]:
            arr = read_rgb(im) if isinstance(im, (str, os.PathLike)) else np.asarray(im)
            arr = np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr  # gray -> RGB, as convert('RGB')
            x = torch.from_numpy(rearrange(arr, "h w c -> 1 c h w").astype(np.float32) / 255)  # ToTensor: [0, 1]
            batch.append(F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False))
        with torch.no_grad():
            feats.append(model(torch.cat(batch).to(device)).double().cpu().numpy())  # (b, 2048)
    return np.concatenate(feats)


def fid_folders(dir_a, dir_b, weights_path=None, batch_size=50, device="cpu"):
    """FID between two image folders, as `python -m pytorch_fid DIR_A DIR_B` (2048-d pool3 features, batch 50)."""
    files_a, files_b = image_files(dir_a), image_files(dir_b)
    model = load_fid_inception(weights_path, device)
    print(f"FID: {len(files_a)} images in {dir_a} vs {len(files_b)} in {dir_b}")
    mu_a, sigma_a = stats(inception_features(model, files_a, batch_size, device))
    mu_b, sigma_b = stats(inception_features(model, files_b, batch_size, device))
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


# --- Oracle classifier for the synthetic data: a small CNN trained on real synthetic images to predict their ground-truth
# findings. It turns report->image generation into a measurable task (label accuracy / F1 of generated images) and gives
# a feature space for FD-oracle (data-spec §5.5). Multi-label: one sigmoid per finding, BCE.

def images_to_tensor(images, channels):
    """List of uint8 arrays ((S, S) gray or (S, S, 3) RGB) -> float (N, channels, S, S) in [-1, 1].
    Gray is repeated to 3 channels and RGB averaged to 1, so a 1-channel oracle can read 3-channel decoded images."""
    x = torch.from_numpy(np.stack([np.asarray(im) for im in images])).float() / 127.5 - 1
    x = x.unsqueeze(1) if x.dim() == 3 else rearrange(x, "n h w c -> n c h w")  # (N, C, S, S)
    if x.shape[1] != channels:
        x = x.expand(-1, channels, -1, -1) if x.shape[1] == 1 else x.mean(dim=1, keepdim=True)
    return x


class OracleClassifier(nn.Module):
    """4 stride-2 conv blocks (S -> S/16) -> global max + mean pool (a nodule is a tiny bright spot: max finds it anywhere)
    -> features (D = 2·width) -> one logit per finding."""

    def __init__(self, findings, image_size=64, channels=1, width=32):
        super().__init__()
        self.findings, self.image_size, self.channels, self.width = tuple(findings), image_size, channels, width
        layers, c = [], channels
        for c_out in (width // 2, width, width, width):
            layers += [nn.Conv2d(c, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
            c = c_out
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(2 * width, len(self.findings))
        self.heldout_acc = None  # {finding: accuracy} on held-out real images, set by train_oracle

    def forward_features(self, x):  # (N, C, S, S) -> (N, 2·width)
        h = self.convs(x)  # (N, width, S/16, S/16)
        return torch.cat([h.amax(dim=(2, 3)), h.mean(dim=(2, 3))], dim=1)

    def forward(self, x):  # (N, C, S, S) -> logits (N, F)
        return self.head(self.forward_features(x))

    @torch.no_grad()
    def _run(self, images, fn, batch_size=256):
        for im in images[:1]:
            if np.asarray(im).shape[:2] != (self.image_size, self.image_size):
                raise ValueError(f"oracle was trained on {self.image_size}px images, got {np.asarray(im).shape}")
        self.eval()
        return torch.cat([fn(images_to_tensor(images[i:i + batch_size], self.channels))
                          for i in range(0, len(images), batch_size)]).numpy()

    def predict(self, images):
        """uint8 images -> (N, F) int 0/1 findings (sigmoid > 0.5)."""
        return self._run(images, lambda x: (self(x) > 0).long())

    def features(self, images):
        """uint8 images -> (N, D) float penultimate features, the space FD-oracle is measured in."""
        return self._run(images, self.forward_features).astype(np.float64)


def pair_labels(pairs, findings):
    """(N, F) int 0/1 ground truth from Pair.labels; anything else is an error naming the pair (the oracle needs 0/1)."""
    out = np.zeros((len(pairs), len(findings)), dtype=np.int64)
    for i, p in enumerate(pairs):
        for j, f in enumerate(findings):
            v = (p.labels or {}).get(f)
            if v not in (0, 1):
                raise ValueError(f"pair {p.uid or i}: finding {f!r} has label {v!r}; the oracle needs 0/1 labels")
            out[i, j] = v
    return out


def train_oracle(train_pairs, findings, run_dir=None, steps=600, batch_size=32, n_images=4000, n_heldout=500,
                 channels=None, lr=1e-2, seed=0):
    """Train (or load from run_dir/oracle.pt when it matches findings, image size and channels) the oracle classifier.

    Uses the first n_images + n_heldout pairs; the last n_heldout are never trained on and give the printed held-out
    accuracy. channels=None keeps the images' own channel count. A seed reproduces the run exactly on CPU."""
    findings = tuple(findings)
    n = min(len(train_pairs), n_images + n_heldout)
    if n < 2 * n_heldout:
        raise ValueError(f"train_oracle: need at least {2 * n_heldout} pairs, got {n} (or lower n_heldout)")
    first = np.asarray(train_pairs[0].image)
    image_size, channels = first.shape[0], channels or (3 if first.ndim == 3 else 1)
    path = os.path.join(run_dir, "oracle.pt") if run_dir else None
    if path and os.path.isfile(path):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a stale or broken cache is not worth stopping an evaluation for: retrain
            print(f"oracle: cannot read {path} ({type(e).__name__}); retraining")
            ckpt = {"findings": (), "image_size": None, "channels": None}
        if (tuple(ckpt["findings"]), ckpt["image_size"], ckpt["channels"]) == (findings, image_size, channels):
            oracle = OracleClassifier(findings, image_size, channels, ckpt["width"])
            oracle.load_state_dict(ckpt["state_dict"])
            oracle.heldout_acc = ckpt["heldout_acc"]
            print(f"oracle: loaded {path} (held-out acc {np.mean(list(oracle.heldout_acc.values())):.4f})")
            return oracle.eval()
        elif ckpt["image_size"] is not None:
            print(f"oracle: {path} was trained for other findings/size/channels; retraining")
    t0 = time.time()
    pairs = [train_pairs[i] for i in range(n)]
    images, labels = [np.asarray(p.image) for p in pairs], pair_labels(pairs, findings)
    if any(im.shape != first.shape for im in images):
        raise ValueError(f"train_oracle: all images must have the shape of the first one, {first.shape}")
    train_images, y = images[:-n_heldout], torch.from_numpy(labels[:-n_heldout]).float()  # (N, F)
    with torch.random.fork_rng(devices=[]):  # a seeded init that leaves the caller's global RNG alone
        torch.manual_seed(seed)
        oracle = OracleClassifier(findings, image_size, channels)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(oracle.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    oracle.train()
    for _ in range(steps):
        idx = torch.randint(len(train_images), (batch_size,), generator=gen)
        x = images_to_tensor([train_images[i] for i in idx.tolist()], channels)  # (B, C, S, S); uint8 until needed
        loss = F.binary_cross_entropy_with_logits(oracle(x), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    oracle.eval()
    acc = (oracle.predict(images[-n_heldout:]) == labels[-n_heldout:]).mean(axis=0)  # (F,)
    oracle.heldout_acc = {f: float(a) for f, a in zip(findings, acc)}
    print(f"oracle: {steps} steps on {len(train_images)} images in {time.time() - t0:.1f}s; held-out acc {acc.mean():.4f} ("
          + ", ".join(f"{f} {a:.3f}" for f, a in oracle.heldout_acc.items()) + ")")
    if path:
        os.makedirs(run_dir, exist_ok=True)
        torch.save({"state_dict": oracle.state_dict(), "findings": list(findings), "image_size": image_size,
                    "channels": channels, "width": oracle.width, "heldout_acc": oracle.heldout_acc}, path + ".tmp")
        os.replace(path + ".tmp", path)  # atomic: a crash never leaves a half-written oracle.pt
    return oracle


def fd_oracle(oracle, real_images, gen_images):
    """FD-oracle: the Fréchet distance in the oracle's feature space (a toy analogue of FID, NOT comparable to FID).
    Like FID it is biased upward for small N: compare numbers only at the same N."""
    return frechet_distance(*stats(oracle.features(real_images)), *stats(oracle.features(gen_images)))


def fd_oracle_floor(oracle, real_images):
    """The real-vs-real floor: FD-oracle between the first and second half of one real set (each half N/2)."""
    half = len(real_images) // 2
    return fd_oracle(oracle, real_images[:half], real_images[half:2 * half])


# --- Label metrics, always printed beside trivial baselines.

def scores_from_counts(tp, fp, fn, tn, names):
    """Per-finding counts (F,) (may be expected, fractional counts) -> acc, macro-F1 and per-finding P/R/F1/acc/support.
    A 0/0 precision, recall or F1 is 0, as sklearn with zero_division=0 (so a finding never predicted and never present
    scores F1 0, not 1)."""
    def div(a, b):
        return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)
    tp, fp, fn, tn = (np.asarray(c, dtype=np.float64) for c in (tp, fp, fn, tn))
    precision, recall, f1 = div(tp, tp + fp), div(tp, tp + fn), div(2 * tp, 2 * tp + fp + fn)
    acc = div(tp + tn, tp + fp + fn + tn)
    per = {n: {"f1": float(f1[j]), "precision": float(precision[j]), "recall": float(recall[j]), "acc": float(acc[j]),
               "support": float(tp[j] + fn[j])} for j, n in enumerate(names)}
    return {"acc": float(acc.mean()), "f1_macro": float(f1.mean()), "per_finding": per}


def check_label_matrix(m, what, n_names=None):
    m = np.asarray(m)
    if m.ndim != 2 or not np.isin(m, (0, 1)).all() or (n_names is not None and m.shape[1] != n_names):
        raise ValueError(f"{what}: expected an (N, {n_names or 'F'}) matrix of 0/1, got shape {m.shape}")
    return m.astype(bool)


def label_metrics(pred, true, names):
    """pred, true (N, F) 0/1 -> {'acc': mean per-finding accuracy, 'f1_macro', 'exact_match': all findings right,
    'per_finding': {name: {'f1', 'precision', 'recall', 'acc', 'support'}}}."""
    pred, true = check_label_matrix(pred, "pred", len(names)), check_label_matrix(true, "true", len(names))
    if pred.shape != true.shape:
        raise ValueError(f"label_metrics: pred {pred.shape} and true {true.shape} differ")
    out = scores_from_counts((pred & true).sum(0), (pred & ~true).sum(0), (~pred & true).sum(0), (~pred & ~true).sum(0),
                             names)
    out["exact_match"] = float((pred == true).all(axis=1).mean())
    return out


def trivial_baselines(true, train_prior=None, names=None):
    """What label_metrics gives without looking at the input, so every number can be printed beside its floor:
    all_negative (predict 0), majority (each finding's majority class under the prior) and prior_sampling (predict 1 with
    the prior's probability, independently; its expected counts, so no sampling noise). train_prior (F,) = positive rate in
    the training data; None uses the rate in `true` itself (slightly optimistic)."""
    true = check_label_matrix(true, "true")
    names = list(names) if names is not None else [str(j) for j in range(true.shape[1])]
    p = true.mean(axis=0) if train_prior is None else np.asarray(train_prior, dtype=np.float64)  # (F,)
    pos, neg = true.sum(0), (~true).sum(0)
    expected = scores_from_counts(p * pos, p * neg, (1 - p) * pos, (1 - p) * neg, names)
    expected["exact_match"] = float(np.where(true, p, 1 - p).prod(axis=1).mean())  # E[all F findings right]
    return {"all_negative": label_metrics(np.zeros_like(true), true, names),
            "majority": label_metrics(np.broadcast_to(p >= 0.5, true.shape), true, names),
            "prior_sampling": expected}


#### Evaluating a trained run  (owner: lead)

def _binary(labels: dict, names) -> list[int]:
    """Positive = 1; negated, uncertain and unmentioned = 0 (the usual binarisation for report-generation label F1)."""
    return [1 if labels.get(n) == 1 else 0 for n in names]


def _domain_findings(domain: str):
    from data.synthetic import CXR_FINDINGS, PATH_FINDINGS
    return CXR_FINDINGS if domain == "cxr" else PATH_FINDINGS


def evaluation_pairs(test, n_eval: int) -> list:
    """The first n_eval test pairs of each domain: a mix of sources (data.ConcatPairs) is one list after the other, and
    its first n_eval pairs would all be the first domain's."""
    parts = getattr(test, "parts", [test])
    return [part[i] for part in parts for i in range(min(n_eval, len(part)))]


def evaluate(model, tok, cfg, *, device="cpu", log=print, grid_path=None, quick=False) -> dict:
    """All tasks, all metrics, on the first n_eval test pairs of each domain of cfg.data (a train.TrainConfig or anything
    with its fields).

    image → report: the model fills the text slots given the image codes; the report labeler reads the findings off the
    generated text (label F1 against the ground truth), plus BLEU / METEOR / ROUGE-L / CIDEr against the real report.
    report → image: the model fills the image slots given the report; on synthetic data the oracle classifier reads the
    findings off the generated image (against the labels of the conditioning report) and FD-oracle compares feature
    statistics with real test images. Each number is returned beside its trivial baseline."""
    import data
    from data.labeler import chexpert_labels, report_labels
    from sample import condition_on_images, condition_on_reports, generate, sampling_settings, save_grid

    from train import data_options
    test = data.load_pairs(cfg.data, "test", data_dir=cfg.data_dir or None, image_size=cfg.image_size, seed=cfg.seed,
                           **data_options(cfg))
    pairs = evaluation_pairs(test, cfg.n_eval)
    n = len(pairs)
    images, reports, domains = [p.image for p in pairs], [p.report for p in pairs], [p.domain for p in pairs]
    model.eval()
    seed = cfg.seed
    gen_reports = [r for r, _, _ in generate(model, tok, condition_on_images(tok, images, domains), seed=seed,
                                              **sampling_settings(vars(cfg), tok, "i2t"))]
    gen_images = [im for _, im, _ in generate(model, tok, condition_on_reports(tok, reports, domains), seed=seed + 1,
                                               **sampling_settings(vars(cfg), tok, "t2i"))]
    metrics = {"n_eval": n, "per_domain": {}}
    for domain in sorted(set(domains)):
        idx = [i for i, d in enumerate(domains) if d == domain]
        synthetic = all(pairs[i].uid.startswith("synthetic") for i in idx)  # ground-truth labels and an oracle exist
        m = {}
        # -- image → report ------------------------------------------------------------------------------------------
        refs, gens = [reports[i] for i in idx], [gen_reports[i] for i in idx]
        m["i2t"] = dict(report_metrics(gens, refs))
        rng = np.random.default_rng(seed)
        train_same = _train_pairs_of(cfg, domain, 4500 if synthetic else 2000)
        random_refs = [train_same[j].report for j in rng.integers(len(train_same), size=len(gens))]
        m["i2t_baseline_random_train_report"] = {k: v for k, v in report_metrics(random_refs, refs).items() if k != "meteor_stages"}
        if synthetic:
            names = _domain_findings(domain)
            true = np.array([_binary(pairs[i].labels, names) for i in idx])
            pred = np.array([_binary(report_labels(g, domain), names) for g in gens])
        else:  # real reports: CheXpert-style labels of the generated text vs those of the reference text
            names = list(chexpert_labels(refs[0]).keys())
            true = np.array([_binary(chexpert_labels(r), names) for r in refs])
            pred = np.array([_binary(chexpert_labels(g), names) for g in gens])
        lm = label_metrics(pred, true, names)
        m["i2t"].update(label_f1_macro=lm["f1_macro"], label_acc=lm["acc"], label_per_finding=lm["per_finding"])
        m["i2t_baselines"] = _baseline_numbers(true, np.array([_binary(p.labels, names) for p in train_same])
                                               if synthetic else None)
        # -- report → image ------------------------------------------------------------------------------------------
        if synthetic:
            small = bool(getattr(cfg, "oracle_steps", 0)) and cfg.oracle_steps < 300  # tests: a quick, rougher oracle
            oracle = train_oracle(train_same, names, os.path.join(cfg.out, f"oracle_{domain}"), seed=cfg.seed,
                                  steps=getattr(cfg, "oracle_steps", 0) or 600, n_images=400 if small else 4000,
                                  n_heldout=100 if small else 500)
            gimgs, rimgs = [gen_images[i] for i in idx], [images[i] for i in idx]
            tm = label_metrics(np.asarray(oracle.predict(gimgs)), true, names)
            m["t2i"] = {"label_acc": tm["acc"], "label_f1_macro": tm["f1_macro"], "label_per_finding": tm["per_finding"]}
            m["t2i_baselines"] = m["i2t_baselines"]
            m["oracle"] = {"test_acc": label_metrics(np.asarray(oracle.predict(rimgs)), true, names)["acc"]}
            if not quick:
                # the same set sizes as the floor (first half of the real images vs images generated from the other
                # half's reports), since Fréchet distances are biased upward at small N
                half = len(rimgs) // 2
                m["t2i"]["fd_oracle"] = fd_oracle(oracle, rimgs[:half], gimgs[half:2 * half])
                m["t2i"]["fd_oracle_real_floor"] = fd_oracle_floor(oracle, rimgs)
        metrics["per_domain"][domain] = m
    # the top level holds the mean over domains (the only domain, for single-domain runs), as the paper's Table 4 does
    doms = list(metrics["per_domain"].values())
    for task in ("i2t", "t2i", "oracle", "i2t_baselines", "t2i_baselines", "i2t_baseline_random_train_report"):
        if all(task in d for d in doms):
            metrics[task] = _mean_dicts([d[task] for d in doms])
    if getattr(tok, "stats", None):
        metrics["tokenizer"] = dict(tok.stats)
    if grid_path:
        k = min(8, n)
        cells, caps = [], []
        for i in range(k):
            cells += [images[i], gen_images[i], images[i]]
            caps += ["REAL: " + reports[i], "GENERATED IMAGE from the report at left", "GENERATED REPORT: " + gen_reports[i]]
        save_grid(cells, caps, grid_path, cols=3)
    return metrics


def _train_pairs_of(cfg, domain: str, n: int) -> list:
    """Up to n training pairs of one domain (for the oracle, the label prior and the random-report baseline)."""
    import data
    from train import data_options
    train = data.load_pairs(cfg.data, "train", data_dir=cfg.data_dir or None, image_size=cfg.image_size, seed=cfg.seed,
                            limit=n, **data_options(cfg))
    return [p for p in (train[j] for j in range(len(train))) if p.domain == domain]


def _baseline_numbers(true: np.ndarray, train_true) -> dict:
    """Trivial label baselines: all-negative, majority per finding, and guessing at the training prior."""
    return trivial_baselines(true, train_prior=None if train_true is None else train_true.mean(0))


def _mean_dicts(ds: list[dict]) -> dict:
    out = {}
    for k, v in ds[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and all(isinstance(d.get(k), (int, float)) for d in ds):
            out[k] = float(np.mean([d[k] for d in ds]))
        elif isinstance(v, dict) and all(isinstance(d.get(k), dict) for d in ds) and len(ds) > 1:
            out[k] = _mean_dicts([d[k] for d in ds])
        elif len(ds) == 1:
            out[k] = v
    return out


def curve_row(m: dict) -> dict:
    """The numbers a learning curve plots."""
    row = {"i2t_f1": m["i2t"]["label_f1_macro"], "bleu4": m["i2t"]["bleu4"]}
    if "t2i" in m:
        row.update(t2i_f1=m["t2i"]["label_f1_macro"], t2i_acc=m["t2i"]["label_acc"])
    return row


def format_table(m: dict) -> str:
    """A markdown table: every quality number beside its trivial baseline."""
    rows = ["| metric | model | trivial baseline |", "|---|---|---|"]
    base = m.get("i2t_baselines", {})
    def b(name, key):
        return f"{base[name][key]:.3f} ({name.replace('_', ' ')})" if name in base and key in base[name] else "-"
    i2t = m["i2t"]
    rows.append(f"| i2t label macro-F1 | {i2t['label_f1_macro']:.3f} | {b('prior_sampling', 'f1_macro')} |")
    rows.append(f"| i2t label accuracy | {i2t['label_acc']:.3f} | {b('all_negative', 'acc')} |")
    rb = m.get("i2t_baseline_random_train_report", {})
    for k in ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider"):
        if k in i2t:
            rows.append(f"| i2t {k} | {i2t[k]:.3f} | {rb.get(k, float('nan')):.3f} (a random training report) |")
    if "t2i" in m:
        t = m["t2i"]
        rows.append(f"| t2i label macro-F1 (oracle) | {t['label_f1_macro']:.3f} | {b('prior_sampling', 'f1_macro')} |")
        rows.append(f"| t2i label accuracy (oracle) | {t['label_acc']:.3f} | {b('all_negative', 'acc')} |")
        if "fd_oracle" in t:
            rows.append(f"| t2i FD-oracle (lower is better) | {t['fd_oracle']:.3f} | {t['fd_oracle_real_floor']:.3f} (real vs real floor) |")
    if "oracle" in m:
        rows.append(f"| oracle accuracy on real test images | {m['oracle']['test_acc']:.3f} | |")
    if "tokenizer" in m:
        rows.append(f"| tokenizer PSNR dB / codebook usage | {m['tokenizer'].get('psnr_db', float('nan')):.1f} / "
                    f"{m['tokenizer'].get('codebook_usage', float('nan')):.2f} | |")
    return "\n".join(rows)


#### CLI  (owner: lead)

def main(argv=None):
    import argparse
    import json
    p = argparse.ArgumentParser(description="Evaluate MeDiM runs, image folders (FID) or report folders.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--run", help="a run directory: all tasks, all metrics → metrics.json + a markdown table")
    g.add_argument("--fid", nargs=2, metavar=("DIR_A", "DIR_B"), help="FID between two image folders (like pytorch-fid)")
    g.add_argument("--reports", nargs=2, metavar=("GEN_DIR", "REF_DIR"), help="report metrics over text_{i}.txt pairs")
    p.add_argument("--inception-weights", default=os.environ.get("MEDIM_INCEPTION", ""),
                   help="path to pt_inception-2015-12-05-6726825d.pth (pytorch-fid's FID weights)")
    p.add_argument("--n-eval", type=int, default=0, help="--run: number of test pairs (default: the run's n_eval)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="--run: override a sampling setting of the run, e.g. --set token_temperature=0 --set cfg_scale=2 "
                        "(sample_steps, text_steps, temperature, token_temperature, cfg_scale, i2t_cfg_scale, "
                        "text_left_to_right)")
    p.add_argument("--out", default="", help="--run: where metrics go (default RUN/metrics.json; use another name to compare)")
    p.add_argument("--raw-weights", action="store_true", help="--run: the raw weights instead of the EMA weights")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.fid:
        for d in args.fid:
            if not os.path.isdir(d):
                p.error(f"--fid: {d} is not a directory")
        print(f"FID: {fid_folders(args.fid[0], args.fid[1], args.inception_weights, device=args.device):.4f}")
    elif args.reports:
        gen, ref = _read_text_pairs(*args.reports)
        print(json.dumps(report_metrics(gen, ref), indent=2))
    else:
        from types import SimpleNamespace
        from sample import load_run
        model, tok, tcfg = load_run(args.run, args.device, use_ema=not args.raw_weights)
        cfg = SimpleNamespace(**tcfg)
        cfg.out = args.run
        if args.n_eval:
            cfg.n_eval = args.n_eval
        allowed = {"sample_steps": int, "text_steps": int, "temperature": float, "token_temperature": float,
                   "cfg_scale": float, "i2t_cfg_scale": float,
                   "text_left_to_right": lambda v: v.lower() in ("1", "true", "yes")}
        for kv in args.set:
            key, _, value = kv.partition("=")
            if key not in allowed or not value:
                p.error(f"--set {kv!r}: expected KEY=VALUE with KEY one of {sorted(allowed)}")
            setattr(cfg, key, allowed[key](value))
        out = args.out or os.path.join(args.run, "metrics.json")
        m = evaluate(model, tok, cfg, device=args.device,
                     grid_path=os.path.splitext(out)[0] + ".png" if args.out else os.path.join(args.run, "samples.png"))
        if os.path.exists(os.path.join(args.run, "metrics.json")) and not args.out:
            m.setdefault("train", json.load(open(os.path.join(args.run, "metrics.json"))).get("train", {}))
        with open(out, "w") as f:
            json.dump(m, f, indent=2)
        print(format_table(m))


def _read_text_pairs(gen_dir: str, ref_dir: str):
    """text_{i}.txt files present in both folders, paired by index (the layout of MeDiM's report_metric.py)."""
    import re
    def index(d):
        if not os.path.isdir(d):
            raise SystemExit(f"error: --reports: {d} is not a directory")
        return {int(m.group(1)): os.path.join(d, f) for f in os.listdir(d) if (m := re.fullmatch(r"text_(\d+)\.txt", f))}
    g, r = index(gen_dir), index(ref_dir)
    common = sorted(set(g) & set(r))
    if not common:
        raise SystemExit(f"error: no text_<i>.txt file is in both {gen_dir} ({len(g)} files) and {ref_dir} ({len(r)} files)")
    read = lambda path: open(path, encoding="utf-8", errors="replace").read().strip()
    return [read(g[i]) for i in common], [read(r[i]) for i in common]


if __name__ == "__main__":
    main()
