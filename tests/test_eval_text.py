"""Text metrics in eval_text.py against the reference tools they re-implement (test-only oracles: NLTK 3.9.1,
pycocoevalcap 1.2, rouge 1.0.1) and against the golden numbers of docs/metrics.md "Golden numbers".

Random cases use a ~30-word vocabulary with inflected forms so that n-grams repeat and Porter stems collide.
The WordNet stage is checked on tests/fixtures/wordnet/, an excerpt of WordNet 3.0 in the real file format that
NLTK's own WordNetCorpusReader reads too (rebuild it with tests/fixtures/make_wordnet_fixture.py).
"""
import contextlib
import importlib.util
import io
import math
import os
import random
import re
import shutil
import warnings

import nltk
import numpy as np
import pydoc_data.topics
import pytest
from nltk.corpus.reader.wordnet import WordNetCorpusReader
from nltk.stem.porter import PorterStemmer
from nltk.translate import bleu_score as nltk_bleu
from nltk.translate import meteor_score as nltk_meteor
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from rouge import Rouge as PltrdyRouge

import eval_text as E

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
WORDNET_DIR = os.path.join(FIXTURES, "wordnet")
_spec = importlib.util.spec_from_file_location("make_wordnet_fixture",
                                               os.path.join(FIXTURES, "make_wordnet_fixture.py"))
_fixture_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixture_module)
FIXTURE_VOCAB = _fixture_module.VOCAB  # every word whose synonym lookups the fixture holds completely

VOCAB = ("the heart size is are normal Normal lungs lung clear clearly no effusion effusions pleural enlarged "
         "enlargement mild mildly . , of there opacity opacities stable acute chest thorax big large").split()
WEIGHTS = [(1.0,), (0.5, 0.5), (1 / 3,) * 3, (0.25,) * 4, (0.1, 0.3, 0.5, 0.1)]

# docs/metrics.md "Golden numbers": the inputs
P1 = ("The heart size is normal. The lungs are clear.",
      "Heart size is normal. Lungs are clear without focal consolidation.")
P2 = ("There is mild enlargement of the cardiac silhouette. No pleural effusions.",
      "The cardiac silhouette is mildly enlarged. There is no pleural effusion or pneumothorax.")
P3 = ("No acute findings in the chest.", "No acute process in the thorax.")
PAIRS = [P1, P2, P3]

REPORT_SENTENCES = [
    "The heart size is normal.", "Heart size is within normal limits.", "The lungs are clear.",
    "Lungs are clear without focal consolidation.", "No pleural effusion or pneumothorax.",
    "There is mild enlargement of the cardiac silhouette.", "Mild pulmonary vascular congestion.",
    "Small left pleural effusion, unchanged from prior study.", "Bibasilar atelectasis.",
    "No acute cardiopulmonary process.", "Degenerative changes of the thoracic spine.",
    "Increased opacity in the right lower lobe, concerning for pneumonia.", "Mediastinal contours are stable.",
    "No acute findings in the chest.", "Moderate pulmonary edema has improved.", "The tumor cells show large nuclei.",
    "Tissue section shows benign stained cells; no malignant changes are seen.",
]


class NoWordNet:
    """NLTK wordnet stand-in whose synsets() is empty: NLTK METEOR then runs exact + stem only."""

    def synsets(self, word):
        return []


def random_tokens(rng, max_len=40):
    return [rng.choice(VOCAB) for _ in range(rng.randint(0, max_len))]


def random_report(rng):
    return " ".join(rng.sample(REPORT_SENTENCES, rng.randint(1, 4)))


def close(ours, ref):
    """Within 1e-9 absolute AND relative, so that tiny values like NLTK's method0 1e-154 are compared too."""
    return abs(ours - ref) <= 1e-9 and math.isclose(ours, ref, rel_tol=1e-9, abs_tol=1e-300)


#### BLEU

@pytest.mark.filterwarnings("ignore::UserWarning")  # NLTK warns on every zero n-gram count under method0
def test_sentence_and_corpus_bleu_equal_nltk_on_random_tokens():
    rng = random.Random(0)
    corpus_refs, corpus_hyps = [], []
    for case in range(300):
        refs = [random_tokens(rng) for _ in range(rng.randint(1, 3))]
        hyp = random_tokens(rng)
        corpus_refs.append(refs)
        corpus_hyps.append(hyp)
        for smoothing in ("method0", "method1"):
            nltk_smooth = getattr(nltk_bleu.SmoothingFunction(), smoothing)
            ours = E.sentence_bleu(refs, hyp, WEIGHTS, smoothing)
            ref = nltk_bleu.sentence_bleu(refs, hyp, WEIGHTS, nltk_smooth)
            assert all(type(a) is type(b) or (isinstance(a, float) and isinstance(b, float)) for a, b in zip(ours, ref))
            assert all(close(a, b) for a, b in zip(ours, ref)), (refs, hyp, smoothing, ours, ref)
            single = E.sentence_bleu(refs, hyp, (0.25,) * 4, smoothing)
            assert close(single, nltk_bleu.sentence_bleu(refs, hyp, smoothing_function=nltk_smooth))
    for start in range(0, 300, 50):  # corpora of 50 segments
        for smoothing in ("method0", "method1"):
            ours = E.corpus_bleu(corpus_refs[start:start + 50], corpus_hyps[start:start + 50], WEIGHTS, smoothing)
            ref = nltk_bleu.corpus_bleu(corpus_refs[start:start + 50], corpus_hyps[start:start + 50], WEIGHTS,
                                        getattr(nltk_bleu.SmoothingFunction(), smoothing))
            assert all(close(a, b) for a, b in zip(ours, ref))


def test_coco_bleu_equals_pycocoevalcap_corpus_and_per_sample():
    rng = random.Random(1)
    for trial in range(6):
        gts = {i: [" ".join(random_tokens(rng)) for _ in range(rng.randint(1, 3))] for i in range(40)}
        res = {i: [" ".join(random_tokens(rng))] for i in range(40)}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap prints its counts
            ref_corpus, ref_each = Bleu(4).compute_score(gts, res)
        ours_corpus, ours_each = E.coco_bleu(gts, res)
        assert all(close(a, b) for a, b in zip(ours_corpus, ref_corpus))
        for k in range(4):
            assert all(close(a, b) for a, b in zip(ours_each[k], ref_each[k]))


def test_bleu_golden_numbers_and_edge_cases():
    tok = [(E.medim_tokens(h), E.medim_tokens(r)) for h, r in PAIRS]
    assert [len(h) for h, _ in tok] == [11, 13, 7] and [len(r) for _, r in tok] == [12, 15, 7]
    m1 = [E.sentence_bleu([r], h, WEIGHTS[:4], "method1") for h, r in tok]
    golden_m1 = [[0.747082, 0.639763, 0.549699, 0.441274], [0.593587, 0.411884, 0.236472, 0.103189],
                 [0.714286, 0.487950, 0.168239, 0.104455]]
    assert np.allclose(m1, golden_m1, atol=5e-7)
    assert np.allclose(np.mean(m1, axis=0), [0.684985, 0.513199, 0.318137, 0.216306], atol=5e-7)
    nosm = [E.sentence_bleu([r], h, WEIGHTS[:4]) for h, r in tok]
    assert math.isclose(nosm[1][3], 3.985e-78, rel_tol=1e-3) and math.isclose(nosm[2][2], 1.743e-103, rel_tol=1e-3)
    assert math.isclose(nosm[2][3], 1.042e-154, rel_tol=1e-3)  # method0 is tiny, never exactly 0
    corpus = E.corpus_bleu([[r] for _, r in tok], [h for h, _ in tok], WEIGHTS[:4], "method1")
    assert np.allclose(corpus, [0.673500, 0.511878, 0.362336, 0.250310], atol=5e-7)
    gts = {i: [" ".join(r)] for i, (_, r) in enumerate(tok)}
    res = {i: [" ".join(h)] for i, (h, _) in enumerate(tok)}
    coco_corpus, coco_each = E.coco_bleu(gts, res)
    assert np.allclose(coco_corpus, [0.673500, 0.511878, 0.362336, 0.250310], atol=5e-7)
    assert math.isclose(coco_each[3][1], 3.263e-05, rel_tol=1e-3)  # pycocoevalcap: tiny, never 0
    assert math.isclose(coco_each[2][2], 3.625e-06, rel_tol=1e-3)
    assert math.isclose(coco_each[3][2], 1.045e-08, rel_tol=1e-3)
    # identical strings: 1 for every order; no unigram match or empty hypothesis: NLTK's integer 0
    assert E.sentence_bleu([tok[0][1]], tok[0][1], WEIGHTS[:4], "method1") == [1.0] * 4
    assert E.sentence_bleu([["a", "b"]], [], smoothing="method1") == 0 and type(E.sentence_bleu([["a"]], [])) is int
    assert E.sentence_bleu([["a", "b", "c"]], ["x", "y", "z"], smoothing="method1") == 0
    assert math.isclose(E.sentence_bleu([["no", "acute", "process", "."]], ["no", "acute"], smoothing="method1"),
                        (1 * 1 * 0.1 * 0.1) ** 0.25 * math.exp(-1))  # = 0.116334
    assert math.isclose(E.sentence_bleu([["normal"]], ["normal"], smoothing="method1"), 0.001 ** 0.25)
    assert math.isclose(E.sentence_bleu([["normal"]], ["normal"]), 1.821832e-231, rel_tol=1e-6)
    # closest reference length: |5-4| = |3-4| is a tie that goes to the shorter reference, so BP = 1
    assert E.sentence_bleu([list("abcde"), list("abc")], list("abcd"), (1,)) == 1.0


def test_bleu_rejects_bad_arguments():
    with pytest.raises(ValueError, match="reference lists"):
        E.corpus_bleu([[["a"]]], [["a"], ["b"]])
    with pytest.raises(ValueError, match="smoothing"):
        E.sentence_bleu([["a"]], ["a"], smoothing="method7")
    with pytest.raises(ValueError, match="at least one reference"):
        E.sentence_bleu([], ["a"])


#### METEOR: Porter stemmer, exact + stem stages

def test_porter_stem_equals_nltk_on_a_large_vocabulary():
    words = set()
    nltk_root = os.path.dirname(nltk.__file__)  # NLTK's own sources and doctests: ~20k English words
    for folder, _, files in os.walk(nltk_root):
        for name in files:
            if name.endswith((".py", ".doctest")):
                with open(os.path.join(folder, name), encoding="utf8", errors="ignore") as f:
                    words.update(re.findall(r"[A-Za-z]+", f.read()))
    for text in pydoc_data.topics.topics.values():
        words.update(re.findall(r"[A-Za-z]+", text))
    for text in REPORT_SENTENCES:
        words.update(re.findall(r"[A-Za-z]+", text))
    # every suffix rule on a few stems, plus the irregular table, case and non-ASCII quirks
    suffixes = ("ational tional enci anci izer bli alli entli eli ousli ization ation ator alism iveness fulness "
                "ousness aliti iviti biliti fulli logi icate ative alize iciti ical ful ness al ance ence er ic able "
                "ible ant ement ment ent sion tion ou ism ate iti ous ive ize sses ies ied eed ed ing s ss y e ll"
                ).split()
    for stem in ("relat", "gener", "hop", "fil", "tann", "cr", "agre", "bl", "sky", "radi", "opac", "consolid", "a"):
        words.update(stem + s for s in suffixes)
    words.update(["skies", "Skies", "dying", "lying", "tying", "news", "innings", "outings", "cannings", "howe",
                  "proceed", "exceed", "succeed", "ties", "dies", "lied", "cried", "y", "yy", "ay", "syzygy",
                  "naïve", "İstanbul", "ÉTÉ", "x*ded", "", "i", "is", "as", "."])
    assert len(words) > 20000
    stemmer = PorterStemmer()
    mismatches = [w for w in sorted(words) if E.porter_stem(w) != stemmer.stem(w)]
    assert mismatches == []


def test_meteor_exact_and_stem_stages_equal_nltk_on_random_tokens():
    rng = random.Random(2)
    for case in range(600):
        refs = [random_tokens(rng) for _ in range(rng.randint(1, 3))]
        hyp = random_tokens(rng)
        ref_score = nltk_meteor.single_meteor_score(refs[0], hyp, wordnet=NoWordNet())
        assert close(E.single_meteor_score(refs[0], hyp), ref_score), (refs[0], hyp)
        assert close(E.meteor_score(refs, hyp), nltk_meteor.meteor_score(refs, hyp, wordnet=NoWordNet()))
        assert 0.0 <= ref_score <= 1.0


def test_meteor_exact_and_stem_stages_equal_nltk_on_report_pairs():
    rng = random.Random(3)
    for case in range(150):
        hyp, ref = E.medim_tokens(random_report(rng)), E.medim_tokens(random_report(rng))
        assert close(E.single_meteor_score(ref, hyp), nltk_meteor.single_meteor_score(ref, hyp, wordnet=NoWordNet()))


def test_meteor_golden_numbers_and_alignment_quirks():
    es = [E.single_meteor_score(E.medim_tokens(r), E.medim_tokens(h)) for h, r in PAIRS]
    assert np.allclose(es, [0.742297, 0.682935, 0.637143], atol=5e-7)
    ref1 = E.medim_tokens(P1[1])
    assert math.isclose(E.single_meteor_score(ref1, ref1), 0.999711, abs_tol=5e-7)
    for L in (1, 2, 5, 12, 40):  # identical strings score 1 - 0.5/L^3 (one chunk), never 1
        words = [f"w{i}" for i in range(L)]
        assert math.isclose(E.single_meteor_score(words, words), 1 - 0.5 / L ** 3)
    cases = {("the cat the mat", "the mat the cat"): 0.5, ("a b a b", "b a b a"): 0.5,  # reverse greedy matching
             ("heart is big", "heart is large"): 0.625, ("The Heart", "the heart"): 0.9375,
             ("lungs are clear", "lung is clear"): 1 / 3, ("heart size normal", "normal heart size"): 0.851852}
    for (hyp, ref), golden in cases.items():
        assert math.isclose(E.single_meteor_score(ref.split(), hyp.split()), golden, abs_tol=5e-7), (hyp, ref)
    assert math.isclose(E.meteor_score([["heart", "is", "large"], ["heart", "is", "big"]], ["heart", "is", "big"]),
                        0.981481, abs_tol=5e-7)
    assert E.single_meteor_score(["a", "b"], []) == 0.0 and E.single_meteor_score([], ["a"]) == 0.0
    assert E.single_meteor_score(["a", "b", "c"], ["x", "y", "z"]) == 0.0
    with pytest.raises(TypeError, match="token lists"):
        E.single_meteor_score("heart is big", "heart is big")


#### METEOR: WordNet stage

@pytest.fixture(scope="module")
def nltk_fixture_wordnet(tmp_path_factory):
    """NLTK's WordNetCorpusReader on the fixture. At load it maps sense keys through the corpus named 'wordnet'
    (map_wn), so the fixture is also installed as corpora/wordnet on a private NLTK data path."""
    root = tmp_path_factory.mktemp("nltk_data")
    shutil.copytree(WORDNET_DIR, root / "corpora" / "wordnet")
    saved = list(nltk.data.path)
    nltk.data.path[:] = [str(root)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multilingual functions are not available" (no OMW reader)
            reader = WordNetCorpusReader(str(root / "corpora" / "wordnet"), None)
        yield reader
    finally:
        nltk.data.path[:] = saved


def test_wordnet_reader_gives_nltk_synsets_and_synonyms(nltk_fixture_wordnet):
    ours = E.WordNet(WORDNET_DIR)
    words = set(ours.index) | set(FIXTURE_VOCAB) | {E.porter_stem(w) for w in FIXTURE_VOCAB}
    words |= {w + s for w in list(words) for s in ("s", "es", "ed", "ing", "er", "est")} | {"Chest", "LUNGS"}
    for pos in ours.exceptions:
        words |= set(ours.exceptions[pos])
    assert len(words) > 1000
    for w in sorted(words):
        theirs = nltk_fixture_wordnet.synsets(w)
        assert ours.synsets(w) == [(s.pos().replace("s", "a"), s.offset()) for s in theirs], w
        names = {lemma.name() for s in theirs for lemma in s.lemmas() if "_" not in lemma.name()}
        assert ours.synonyms(w) == names | {w}, w
    assert {"thorax", "pectus", "breast"} <= ours.synonyms("chest")  # a real synonym, so the test can fail
    assert "be" in {n for ss in ours.synsets("is") for n in ours.lemma_names(*ss)}  # via verb.exc


def test_meteor_with_wordnet_equals_nltk_on_the_fixture(nltk_fixture_wordnet):
    ours = E.WordNet(WORDNET_DIR)
    rng = random.Random(4)
    differs_from_stem_only = 0
    for case in range(400):
        refs = [[rng.choice(FIXTURE_VOCAB) for _ in range(rng.randint(0, 15))] for _ in range(rng.randint(1, 3))]
        hyp = [rng.choice(FIXTURE_VOCAB) for _ in range(rng.randint(0, 15))]
        theirs = nltk_meteor.meteor_score(refs, hyp, wordnet=nltk_fixture_wordnet)
        assert close(E.meteor_score(refs, hyp, ours), theirs), (refs, hyp)
        differs_from_stem_only += E.meteor_score(refs, hyp) != theirs
    assert differs_from_stem_only > 10  # the synonym stage really matched something (18 of these 400)
    # the fixture holds every lookup these pairs make, so the golden full-WordNet values come out (docs/metrics.md)
    wn = [E.single_meteor_score(E.medim_tokens(r), E.medim_tokens(h), ours) for h, r in PAIRS]
    assert np.allclose(wn, [0.742297, 0.682935, 0.841270], atol=5e-7)  # chest ~ thorax lifts pair 3
    assert math.isclose(E.single_meteor_score(["heart", "is", "large"], ["heart", "is", "big"], ours), 0.625)


def test_load_wordnet_resolves_env_var_and_reports_missing_files(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDIM_WORDNET", WORDNET_DIR)
    assert isinstance(E.load_wordnet("auto"), E.WordNet)
    assert E.load_wordnet(None) is None
    assert E.report_metrics([P3[0]], [P3[1]], wordnet="auto")["meteor_stages"] == "exact+stem+wordnet"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        E.load_wordnet(str(tmp_path / "nowhere"))
    shutil.copytree(WORDNET_DIR, tmp_path / "broken")
    os.remove(tmp_path / "broken" / "data.verb")
    with pytest.raises(FileNotFoundError, match="data.verb"):
        E.WordNet(str(tmp_path / "broken"))


#### ROUGE-L and CIDEr-D

def random_rouge_text(rng):
    """Strings that exercise the `rouge` sentence splitter: '.', ' .', doubled spaces, leading/trailing spaces."""
    pieces = [rng.choice(VOCAB + ["  ", ". ", " ."]) for _ in range(rng.randint(0, 40))]
    return " ".join(pieces)


def test_coco_rouge_l_equals_pycocoevalcap():
    rng = random.Random(5)
    for trial in range(5):
        gts = {i: [random_rouge_text(rng) for _ in range(rng.randint(1, 3))] for i in range(40)}
        res = {i: [random_rouge_text(rng)] for i in range(40)}
        ref_mean, ref_each = Rouge().compute_score(gts, res)
        ours_mean, ours_each = E.coco_rouge_l(gts, res)
        assert close(ours_mean, ref_mean) and all(close(a, b) for a, b in zip(ours_each, ref_each))
    gts = {i: [" ".join(E.medim_tokens(r))] for i, (_, r) in enumerate(PAIRS)}
    res = {i: [" ".join(E.medim_tokens(h))] for i, (h, _) in enumerate(PAIRS)}
    mean, each = E.coco_rouge_l(gts, res)
    assert np.allclose(each, [0.776521, 0.493642, 0.714286], atol=5e-7) and math.isclose(mean, 0.661483, abs_tol=5e-7)


def test_rouge_l_f1_equals_rouge_101_including_its_errors():
    rng = random.Random(6)
    scorer, raised = PltrdyRouge(), 0
    for case in range(500):
        hyp, ref = random_rouge_text(rng), random_rouge_text(rng)
        try:
            theirs = scorer.get_scores(hyp, ref)[0]["rouge-l"]["f"]
        except ValueError:
            raised += 1
            with pytest.raises(ValueError):
                E.rouge_l_f1(hyp, ref)
            continue
        assert close(E.rouge_l_f1(hyp, ref), theirs), (hyp, ref)
    assert raised > 0
    for case in range(150):
        hyp, ref = random_report(rng).lower(), random_report(rng).lower()
        assert close(E.rouge_l_f1(hyp, ref), scorer.get_scores(hyp, ref)[0]["rouge-l"]["f"])
    golden = [E.rouge_l_f1(h.lower(), r.lower()) for h, r in PAIRS]
    assert np.allclose(golden, [0.777778, 0.608696, 0.666667], atol=5e-7)
    assert E.rouge_l_f1("a b.", "a b.") == pytest.approx(0.999999995, abs=1e-12)  # the +1e-8
    assert E.rouge_l_f1("a a b", "a b b") == pytest.approx(0.999999995, abs=1e-12)  # set semantics
    assert E.rouge_l_f1("a b. .", "a b.") == pytest.approx(0.799999995, abs=1e-9)  # the '' token of ' '
    with pytest.raises(ValueError, match="hypothesis"):
        E.rouge_l_f1(".", "a b")


def test_coco_cider_equals_pycocoevalcap():
    rng = random.Random(7)
    for trial in range(5):
        n = rng.choice([2, 5, 30])
        gts = {i: [" ".join(random_tokens(rng)) for _ in range(rng.randint(1, 3))] for i in range(n)}
        res = {i: [" ".join(random_tokens(rng))] for i in range(n)}
        ref_mean, ref_each = Cider().compute_score(gts, res)
        ours_mean, ours_each = E.coco_cider(gts, res)
        assert close(ours_mean, ref_mean) and all(close(a, b) for a, b in zip(ours_each, ref_each))
    gts = {i: [random_report(rng)] for i in range(25)}
    res = {i: [random_report(rng)] for i in range(25)}
    assert close(E.coco_cider(gts, res)[0], Cider().compute_score(gts, res)[0])
    gts = {i: [" ".join(E.medim_tokens(r))] for i, (_, r) in enumerate(PAIRS)}
    res = {i: [" ".join(E.medim_tokens(h))] for i, (h, _) in enumerate(PAIRS)}
    mean, each = E.coco_cider(gts, res)
    assert np.allclose(each, [4.967583, 2.110557, 2.163038], atol=5e-7) and math.isclose(mean, 3.080392, abs_tol=5e-7)
    assert E.coco_cider({0: ["a b c"]}, {0: ["a b c"]})[0] == 0.0  # one image: idf is 0


#### report_metrics (the MeDiM protocol)

def medim_script_means(generated, references):
    """MeDiM report_metric.py's loop, run with the oracle libraries (NLTK METEOR without WordNet)."""
    scorer, smooth, rows = PltrdyRouge(), nltk_bleu.SmoothingFunction().method1, []
    prep = lambda text: [t for t in str(text).lower().replace(".", " .").split(" ") if t != ""]
    for response, golden in zip(generated, references):
        response, golden = response.strip(), golden.strip()
        if response == "":
            continue
        hyp, ref = prep(response), prep(golden)
        bleus = [nltk_bleu.sentence_bleu([ref], hyp, weights=w, smoothing_function=smooth)
                 for w in ([1], [0.5, 0.5], [1 / 3] * 3, [0.25] * 4)]
        try:
            rouge_l = scorer.get_scores(response.lower(), golden.lower())[0]["rouge-l"]["f"]
        except Exception:
            continue
        rows.append(bleus + [nltk_meteor.single_meteor_score(ref, hyp, wordnet=NoWordNet()), rouge_l])
    return dict(zip(["bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l"], np.mean(rows, axis=0))), len(rows)


def test_report_metrics_equals_medim_script_and_coco_tools():
    rng = random.Random(8)
    generated = [random_report(rng) for _ in range(60)] + ["", "   ", ".", "Heart.\nLungs clear.", "normal"]
    references = [random_report(rng) for _ in range(60)] + ["No effusion.", "Clear.", "Normal heart.", "Heart.", "."]
    ours = E.report_metrics(generated, references, wordnet=None)
    theirs, n = medim_script_means(generated, references)
    assert ours["n"] == n == 61 and ours["n_unscorable"] == 4 and ours["meteor_stages"] == "exact+stem"
    for key, value in theirs.items():
        assert close(ours[key], value), key
    keep = [i for i in range(len(generated)) if i < 60 or i == 63]
    gts = {i: [" ".join(E.medim_tokens(references[i].strip()))] for i in keep}
    res = {i: [" ".join(E.medim_tokens(generated[i].strip()))] for i in keep}
    with contextlib.redirect_stdout(io.StringIO()):
        coco = Bleu(4).compute_score(gts, res)[0]
    assert all(close(ours[f"coco_bleu{k + 1}"], coco[k]) for k in range(4))
    assert close(ours["rouge_l_coco"], Rouge().compute_score(gts, res)[0])
    assert close(ours["cider"], Cider().compute_score(gts, res)[0])
    # permuting the samples changes nothing
    order = list(range(len(generated)))
    rng.shuffle(order)
    shuffled = E.report_metrics([generated[i] for i in order], [references[i] for i in order], wordnet=None)
    assert all(math.isclose(shuffled[k], ours[k], rel_tol=1e-12) for k in ours if isinstance(ours[k], float))


def test_report_metrics_golden_means_and_unscorable_samples():
    gen, ref = [h for h, _ in PAIRS], [r for _, r in PAIRS]
    out = E.report_metrics(gen, ref, wordnet=None)
    golden = {"bleu1": 0.684985, "bleu2": 0.513199, "bleu3": 0.318137, "bleu4": 0.216306, "meteor": 0.687458,
              "rouge_l": 0.684380, "rouge_l_coco": 0.661483, "cider": 3.080392, "coco_bleu1": 0.673500,
              "coco_bleu4": 0.250310}
    assert all(math.isclose(out[k], v, abs_tol=5e-7) for k, v in golden.items())
    assert out["n"] == 3 and out["meteor_stages"] == "exact+stem"
    assert math.isclose(E.report_metrics(gen, ref, wordnet=WORDNET_DIR)["meteor"], 0.755501, abs_tol=5e-7)
    # MeDiM skips empty and sentence-less generations from every mean; skip_unscorable=False scores them 0
    padded = E.report_metrics(gen + ["", "."], ref + ["a", "b"], wordnet=None)
    assert padded["n"] == 3 and padded["n_unscorable"] == 2 and padded["bleu1"] == out["bleu1"]
    zeros = E.report_metrics(gen + ["", "."], ref + ["a", "b"], wordnet=None, skip_unscorable=False)
    assert zeros["n"] == 5 and math.isclose(zeros["bleu1"], out["bleu1"] * 3 / 5)
    assert math.isclose(zeros["meteor"], out["meteor"] * 3 / 5) and zeros["rouge_l"] < out["rouge_l"]
    nothing = E.report_metrics(["", " "], ["a", "b"], wordnet=None)
    assert nothing["n"] == 0 and math.isnan(nothing["bleu1"]) and math.isnan(nothing["cider"])
    with pytest.raises(ValueError, match="2 generated reports but 1 references"):
        E.report_metrics(["a", "b"], ["a"])


def test_medim_tokens_split_only_periods_and_spaces():
    assert E.medim_tokens("Normal, heart.\nLungs  clear.") == ["normal,", "heart", ".\nlungs", "clear", "."]
    assert E.medim_tokens("  ") == [] and E.medim_tokens("A.B") == ["a", ".b"]
