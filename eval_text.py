"""Report-generation metrics for MeDiM, self-contained (numpy only): BLEU, METEOR (with its Porter stemmer and a WordNet
reader), ROUGE-L and CIDEr-D, each re-implementing one reference tool so that it agrees to 1e-9 (tests/test_eval_text.py
checks against NLTK 3.9.1, pycocoevalcap 1.2 and rouge 1.0.1), and `report_metrics`, the protocol that combines them.

Protocols (docs/metrics.md): MeDiM's report_metric.py (NLTK sentence BLEU + METEOR, `rouge` ROUGE-L, per-sample means)
and R2Gen's pycocoevalcap corpus BLEU / ROUGE-L / CIDEr-D. The quirks kept on purpose are listed there per metric.
Token-level functions take lists of str; the coco_* functions take {id: [str]} dicts exactly like pycocoevalcap.
Papers: BLEU, Papineni et al. 2002; METEOR, Banerjee & Lavie 2005; ROUGE-L, Lin 2004; CIDEr, Vedantam et al. 2015
(arXiv 1411.5726); Porter 1980.
"""
import math
import os
import re
import sys
from collections import Counter
from functools import lru_cache

import numpy as np

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
    """NLTK 3.9.1 `corpus_bleu` (docs/metrics.md "BLEU"). Numerators and denominators are summed over the corpus before
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
    # BLEU = BP · exp(Σ_n w_n · log p_n)  (Papineni et al. 2002, §2.3)
    scores = [bp * math.exp(math.fsum(w * math.log(p_n) for w, p_n in zip(ws, p) if p_n > 0)) for ws in weight_sets]
    return scores if several else scores[0]


def sentence_bleu(references, hypothesis, weights=(0.25, 0.25, 0.25, 0.25), smoothing: str = "method0"):
    """NLTK `sentence_bleu` = corpus_bleu of a one-sentence corpus. MeDiM: smoothing='method1', weights 1/n."""
    return corpus_bleu([references], [hypothesis], weights, smoothing)


def coco_bleu(gts: dict, res: dict, n: int = 4) -> tuple[list[float], list[list[float]]]:
    """pycocoevalcap 1.2 `Bleu(4).compute_score(gts, res)`, the R2Gen protocol (docs/metrics.md "BLEU"): strings split on
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


# Porter (1980) stemmer in NLTK 3.9.1's default NLTK_EXTENSIONS mode (docs/metrics.md "Porter stemmer") for METEOR's
# stem stage.
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
    NLTK's `wordnet.synsets(word)` + `lemma.name()` do for METEOR (docs/metrics.md "WordNet"). `root` is a directory such
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
    """NLTK 3.9.1 `single_meteor_score` on token lists (docs/metrics.md "METEOR"): lowercase, then exact, Porter-stem and
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
    """pycocoevalcap 1.2 `Rouge().compute_score(gts, res)` (R2Gen, docs/metrics.md "ROUGE-L"): tokens from split(' '),
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
    """`rouge` 1.0.1 `Rouge().get_scores(hyp, ref)[0]['rouge-l']['f']`, MeDiM's R-L (docs/metrics.md "ROUGE-L"):
    summary-level union-LCS with *set* semantics, F1 with +1e-8. Raises ValueError on a hypothesis or reference without
    a sentence ('', '.', ...), as `rouge` does."""
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
    """pycocoevalcap 1.2 `Cider().compute_score(gts, res)`, i.e. CIDEr-D (docs/metrics.md "CIDEr-D"): tf-idf n-gram
    vectors (df = #images whose references hold the n-gram), clipped cosine per order, Gaussian length penalty on the
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
    """Report-generation metrics under MeDiM's report_metric.py protocol (docs/metrics.md), plus R2Gen's COCO ones.

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
