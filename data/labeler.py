"""Rule-based report labelers: findings (1 / 0 / -1) from report text, for clinical-efficacy metrics.

- `report_labels(text, domain)`: the findings of the synthetic toy data (data/synthetic.py). It recovers the ground truth of
  every synthetic report exactly (tests/test_labeler.py checks 1,000 per domain), including the side of a pleural effusion.
  On a generated report it gives the labels that eval.py compares with the conditioning image's ground truth (i2t label F1).
- `chexpert_labels(text)`: the 14 CheXpert observations (Irvin et al. 2019, arXiv 1901.07031) for real MIMIC-CXR text
  (Johnson et al. 2019, arXiv 1901.07042): 1 positive, 0 negated, -1 uncertain, None not mentioned.

How it works, CheXpert-style in three stages (mention extraction → classification → aggregation), much simplified:
1. The text is cut into sentences (headers such as "FINDINGS:" dropped, decimals such as "1.5 cm" kept whole).
2. Each keyword match of an observation is a mention. A mention is UNCERTAIN (-1) if a hedge ("possible", "may",
   "cannot exclude", "suggestive of", "rule out", ...) stands before it in its scope or follows it ("... cannot be
   excluded"); else NEGATED (0) if a negation cue ("no", "without", "free of", "negative for", "absence of", "lacks", ...)
   stands before it in its scope or follows it ("... is not seen", "... is absent"); else POSITIVE (1). A scope runs from
   the sentence start (or the last "but / however / although / except / ;" or a comma that opens a new positive clause)
   up to the mention. "No change in the effusion" is not a negation of the effusion.
3. Per observation: positive if any mention is positive, else uncertain if any is, else negative if any is, else None.
   Effusion sides: a mention's side words ("right", "left", "bilateral", "both") come from its clause ("small right and
   moderate left pleural effusions" carries both); a mention without a side word fills only sides that no lateralised
   mention decided ("No pleural effusion." negates both).

Honest comparison. The CheXpert labeler matches curated phrase lists and decides negation/uncertainty with rules over a
dependency parse of each sentence (NegBio-style patterns); CheXbert (Smit et al. 2020, arXiv 2004.09167) is a BERT model
trained on CheXpert-labeler output plus radiologist annotations and was reported to label MIMIC/CheXpert reports more
accurately than the rule-based labeler. This module has neither a parser nor a learned model: scopes are word windows
cut by a fixed list of words, the phrase lists are short, and the real-text rules were checked only on a few dozen
hand-written MIMIC-like sentences (tests/test_labeler.py), never against radiologist labels. Expect it to be weaker than
both on long or compound sentences, double negation, comparisons with prior studies, unusual phrasing and typos. Use its
CheXpert-14 output for relative comparisons between our own models; for numbers comparable with papers, run CheXbert.
On the synthetic reports the vocabulary is closed and it is exact by construction.
"""
import re

from data.synthetic import CXR_FINDINGS, PATH_FINDINGS

#### Sentences, clauses, cues ##########################################################################################

_HEADER = re.compile(r"\b(final report|findings|impression|conclusion|comparison|indication|history|technique|"
                     r"examination|exam|clinical information|reason for exam(ination)?|wet read)\s*:", re.I)
_SENTENCE_END = re.compile(r"(?<!\d)\.(?!\d)|(?<=[!?])|\n")      # "1.5 cm" stays whole; a "?" stays (a hedge)

# Where a negation's or a hedge's scope ends: a contrast word, a semicolon, or a comma that opens a new positive clause.
_SCOPE_BREAK = re.compile(r"\b(but|however|although|though|except|aside from|apart from|otherwise|whereas|while)\b|;|"
                          r",\s*(?=(and\s+)?(there\s+(is|are|has|have)|which|with|small|moderate|large|mild|marked|new|"
                          r"trace|minimal|persistent|increased|decreased|stable|unchanged|a|an|the)\b)")
_NEGATION_PRE = re.compile(
    r"\b(no(?!\s+(significant\s+|interval\s+|appreciable\s+|substantial\s+)?(change|increase|decrease|worsening|"
    r"improvement|progression)\b)|not|without|negative for|free of|absence of|absent|lacks?|lacking|clear of|"
    r"resolution of|resolved|rather than|never)\b")
_POST_SCOPE_END = re.compile(r"[,;]|\b(?:and|but|with|however|although|which|while)\b")   # "X ... is absent" ends here
_NEGATION_POST = re.compile(
    r"\b((is|are|was|were|has|have)\s+(been\s+)?)?(not\s+(seen|identified|present|visuali[sz]ed|evident|"
    r"appreciated|demonstrated|noted|detected)|absent|resolved)\b")
_UNCERTAIN_PRE = re.compile(
    r"\b(possible|possibly|probable|probably|likely|may|might|could|questionable|question of|suspicious for|"
    r"suspect(ed)?|concern(ing)? for|worrisome for|cannot (be )?(excluded|ruled out)|can ?not exclude|cannot exclude|"
    r"not (be )?excluded|difficult to exclude|suggest(s|ed|ive|ing)?( of)?|versus|vs|equivocal|borderline|presumed|"
    r"presumably|rule out|r/o|evaluate for|assess(ment)? for|differential|either|indeterminate|uncertain|top[- ]normal|"
    r"not (entirely |completely )?(clear|certain))\b")
_UNCERTAIN_POST = re.compile(
    r"\b(cannot|can not|could not|can't) be (excluded|ruled out|entirely excluded)|\bnot (be )?(excluded|ruled out)|"
    r"\b(is|are) (possible|likely|suspected|questioned|not excluded)|\bmay be present|\?")
_SIDE_WORDS = re.compile(r"\b(right|left|bilateral|bilaterally|both)\b")


def _sentences(text):
    """Lower-cased sentences with section headers removed."""
    text = _HEADER.sub(". ", text.replace("\r", "\n"))
    return [s.strip().lower() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _classify(sentence, start, end):
    """1 / 0 / -1 for the mention sentence[start:end], from the cues in its scope (see the module docstring)."""
    scope_start = 0
    for brk in _SCOPE_BREAK.finditer(sentence, 0, start):
        scope_start = brk.end()
    before = sentence[scope_start:end]                 # up to the mention's end: "the heart is not enlarged"
    after = _POST_SCOPE_END.split(sentence[end:], maxsplit=1)[0]
    if _UNCERTAIN_PRE.search(before) or _UNCERTAIN_POST.search(after):
        return -1
    if _NEGATION_PRE.search(before) or _NEGATION_POST.search(after):
        return 0
    return 1


def _aggregate(values):
    """CheXpert aggregation: positive > uncertain > negative > not mentioned (None)."""
    for v in (1, -1, 0):
        if v in values:
            return v
    return None


def _mentions(sentences, pattern):
    """[(sentence, classification, match)] for every match of pattern."""
    return [(s, _classify(s, m.start(), m.end()), m) for s in sentences for m in pattern.finditer(s)]


#### Synthetic findings (exact on every synthetic report) ###############################################################

_CXR_PATTERNS = {
    "cardiomegaly": r"cardiomegaly|(heart|cardiac silhouette)( size)? is (\w+ly |not )?enlarged|"
                    r"enlargement of the cardiac silhouette|enlarged heart|heart size is \w+ly enlarged",
    "effusion": r"pleural effusions?|effusions?|pleural fluid",
    "pneumothorax": r"pneumothora(x|ces)|air in the \w+ pleural space",
    "nodule": r"nodul(e|es|ar)",
    "consolidation": r"consolidat\w*|airspace (opacity|opacities|disease)|pneumonia",
    "support_device": r"pacemaker|pacer|catheter|(?<!pleural )\bline\b|\blines\b|picc|\bij\b|\btubes?\b|devices?",
}
_PATH_PATTERNS = {
    "high_cellularity": r"highly cellular|high cellularity|hypercellular|cellularity is (markedly )?increased|"
                        r"crowded cells|densely packed",
    "pleomorphism": r"pleomorph\w*|atypi\w*|vary greatly in size",
    "glands": r"gland\w*|acin(ar|i)|tubular",
    "inflammation": r"inflam\w*|lymphocyt\w*|lymphoid",
    "necrosis": r"necro\w*",
    "mitoses": r"mito(sis|ses|tic)",
}
_CXR_RE = {k: re.compile(v) for k, v in _CXR_PATTERNS.items()}
_PATH_RE = {k: re.compile(v) for k, v in _PATH_PATTERNS.items()}


def _effusion_sides(sentences):
    """{'right': 1|0|-1|None, 'left': ...}: lateralised mentions decide; side-less ones fill what is left."""
    sided, unsided = {"right": [], "left": []}, []
    for s in sentences:
        pending = []                                    # "small right and moderate left pleural effusions"
        for clause in re.split(r",|\band\b|\bwith\b", s):
            sides = {w for w in _SIDE_WORDS.findall(clause)}
            matches = list(_CXR_RE["effusion"].finditer(clause))
            if not matches:                             # side words with no finding of their own wait for the next
                if not any(r.search(clause) for r in _CXR_RE.values()) and not re.search(r"lobe|lingula|zone", clause):
                    pending += sides
                continue
            sides |= set(pending)
            pending = []
            offset = s.find(clause)
            for m in matches:
                value = _classify(s, offset + m.start(), offset + m.end())
                if sides & {"bilateral", "bilaterally", "both"} or sides >= {"right", "left"}:
                    sided["right"].append(value)
                    sided["left"].append(value)
                elif sides:
                    sided[sides.pop()].append(value)
                else:
                    unsided.append(value)
    return {side: _aggregate(sided[side]) if sided[side] else _aggregate(unsided) for side in ("right", "left")}


def report_labels(text, domain="cxr"):
    """{finding: 1 | 0 | -1} for every synthetic finding of the domain (CXR_FINDINGS or PATH_FINDINGS).

    1 positive, -1 uncertain (hedged), 0 negated or not mentioned (the toy ground truth is binary)."""
    if not isinstance(text, str):
        raise ValueError(f"report_labels: text must be a str, got {type(text).__name__}")
    sentences = _sentences(text)
    if domain == "cxr":
        out = {}
        sides = _effusion_sides(sentences)
        for f in CXR_FINDINGS:
            if f.startswith("effusion_"):
                value = sides[f.split("_")[1]]
            else:
                value = _aggregate([v for _, v, _ in _mentions(sentences, _CXR_RE[f])])
            out[f] = 0 if value is None else value
        return out
    if domain == "path":
        return {f: _aggregate([v for _, v, _ in _mentions(sentences, _PATH_RE[f])]) or 0 for f in PATH_FINDINGS}
    raise ValueError(f"report_labels: domain must be 'cxr' or 'path', got {domain!r}")


#### CheXpert-14 for real reports ######################################################################################

CHEXPERT_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
                    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
                    "Pneumothorax", "Support Devices")      # the column order of mimic-cxr-2.0.0-chexpert.csv
_CHEXPERT_PATTERNS = {
    "Atelectasis": r"atelecta\w*|\bcollapse",
    "Cardiomegaly": r"cardiomegaly|(heart|cardiac silhouette|cardiac size|cardiac shadow)( size)?"
                    r"( is| are| appears| remains)?( \w+ly| not| top normal to)? (enlarged|increased)|(enlargement|enlarged) (of the )?(heart|cardiac)|"
                    r"enlarged heart|cardiac enlargement|(heart|cardiac silhouette)( size)?( is| remains| appears)? "
                    r"(top[- ]normal|borderline)",                   # hedged by the uncertainty cue itself
    "Consolidation": r"consolidat\w*",
    "Edema": r"edema|vascular congestion|pulmonary congestion|heart failure|\bchf\b|kerley|cephalization",
    "Enlarged Cardiomediastinum": r"(cardio)?mediastin\w*( silhouette| contours?)?( is| are| appears)?( \w+ly| not)? "
                                  r"(widen\w*|enlarg\w*|prominen\w*)|widen\w* (of the )?mediastin\w*",
    "Fracture": r"fractur\w*",
    "Lung Lesion": r"nodul\w*|\bmass(es)?\b|\blesions?\b|\btumou?r|neoplasm|carcinoma|malignan\w*",
    "Lung Opacity": r"opacit\w*|opacification|infiltrat\w*|airspace disease|haziness|\bhazy\b|densit(y|ies)",
    "Pleural Effusion": r"effusions?|pleural fluid|hydrothorax|blunting of the( \w+)? costophrenic|"
                        r"costophrenic angles?( is| are)? blunt\w*",
    "Pleural Other": r"pleural thickening|pleural plaques?|fibrothorax|pleural scarring|pleural calcification",
    "Pneumonia": r"pneumonia|infection|infectious",
    "Pneumothorax": r"pneumothora(x|ces)",
    "Support Devices": r"pacemaker|pacer|\bicd\b|defibrillator|catheter|(?<!pleural )(?<!septal )\blines?\b|picc|"
                       r"port-?a-?cath|\btubes?\b|\bett\b|drain|stent|sternotomy wires?|\bwires?\b|\bclips?\b|"
                       r"prosthe\w*|devices?|\bleads?\b|valve replacement",
}
# Normal statements that CheXpert counts as negative mentions although no negation word is used.
_CHEXPERT_NORMAL = {
    "Cardiomegaly": r"heart size (is |remains )?(normal|within normal limits)|normal (heart|cardiac) size|"
                    r"heart is normal in size|cardiac silhouette is (normal|within normal limits)",
    "Enlarged Cardiomediastinum": r"(cardio)?mediastinal (silhouette|contours?)( is| are)? (normal|unremarkable|"
                                  r"within normal limits)",
    "Pleural Effusion": r"costophrenic angles? (is |are )?(sharp|clear)",
}
_CHEXPERT_RE = {k: re.compile(v) for k, v in _CHEXPERT_PATTERNS.items()}
_CHEXPERT_NORMAL_RE = {k: re.compile(v) for k, v in _CHEXPERT_NORMAL.items()}


def chexpert_labels(text):
    """{CheXpert class: 1 | 0 | -1 | None} for a real (e.g. MIMIC-CXR findings or impression) report.

    'No Finding' is 1 when no pathology (every class but Support Devices) is positive or uncertain, else None,
    as in the CheXpert labeler. See the module docstring for how this compares with CheXpert / CheXbert."""
    if not isinstance(text, str):
        raise ValueError(f"chexpert_labels: text must be a str, got {type(text).__name__}")
    sentences = _sentences(text)
    out = {}
    for name in CHEXPERT_CLASSES:
        if name == "No Finding":
            continue
        values = [v for _, v, _ in _mentions(sentences, _CHEXPERT_RE[name])]
        if name in _CHEXPERT_NORMAL_RE and any(_CHEXPERT_NORMAL_RE[name].search(s) for s in sentences):
            values.append(0)
        out[name] = _aggregate(values)
    pathology = [out[c] for c in CHEXPERT_CLASSES if c not in ("No Finding", "Support Devices")]
    out["No Finding"] = None if any(v in (1, -1) for v in pathology) else 1
    return {c: out[c] for c in CHEXPERT_CLASSES}
