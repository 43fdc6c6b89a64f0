"""Rule-based report labelers: findings (1 / 0 / -1) from report text, for clinical-efficacy metrics.

- `report_labels(text, domain)`: the findings of the synthetic toy data (data/synthetic.py). It recovers the ground truth of
  every synthetic report exactly (tests/test_labeler.py checks 1,000 per domain), including the side of a pleural effusion.
  On a generated report it gives the labels that eval.py compares with the conditioning image's ground truth (i2t label F1).
- `chexpert_labels(text)`: the 14 CheXpert observations (Irvin et al. 2019, arXiv 1901.07031) for real MIMIC-CXR text
  (Johnson et al. 2019, arXiv 1901.07042): 1 positive, 0 negated, -1 uncertain, None not mentioned.

How it works, CheXpert-style in three stages (mention extraction → classification → aggregation), much simplified:
1. The text is cut into sentences (headers such as "FINDINGS:" dropped, decimals such as "1.5 cm" kept whole).
2. Each phrase match of an observation is a mention (CheXpert's phrase lists, with its "unmention" exceptions such as
   "pericardial effusion" or "calcified nodule"). Cues decide it in CheXpert's order: pre-negation uncertainty ("cannot
   exclude", "not excluded", "no new") → -1; else negation ("no", "without", "free of", "clear of", "negative for",
   "resolved", "history of", "... is not seen", "... has resolved") → 0; else uncertainty ("possible", "may", "suggestive
   of", "versus", "and/or", "... cannot be excluded", "?") → -1; else 1. A cue before the mention reaches it only within
   one clause (cut by "but / however / which / following / ;") and only across a coordinated list of noun phrases:
   "No focal consolidation, suspicious opacity, large pleural effusion, or pneumothorax is identified" negates all four,
   while "No effusion, small right pneumothorax." (a modified noun after a comma, no "or / and" closing a list) and
   "No pneumothorax is seen, and ..." (the negated phrase ended) do not reach on. After the mention, the first predicate
   decides ("Effusion and pneumothorax are not seen" negates both; "Effusion is present and pneumothorax is not seen"
   only the second). "No change in the effusion" is not a negation of the effusion.
3. Per observation: positive if any mention is positive, else uncertain if any is, else negative if any is, else None.
   Effusion sides (synthetic labels): a mention's side words ("right", "left", "bilateral", "both") come from its clause
   ("small right and moderate left pleural effusions" carries both); a mention without a side word fills only sides
   that no lateralised mention decided ("No pleural effusion." negates both).

Honest comparison. The CheXpert labeler matches curated phrase lists and decides negation/uncertainty with rules over a
dependency parse of each sentence (NegBio-style patterns); CheXbert (Smit et al. 2020, arXiv 2004.09167) is a BERT model
trained on CheXpert-labeler output plus radiologist annotations and was reported to label MIMIC/CheXpert reports more
accurately than the rule-based labeler. This module has neither a parser nor a learned model: the list rules above stand
in for the parse, so it is weaker on double negation, comparisons with prior studies, long compound sentences and
typos. Measured against human MeSH codes of the IU X-ray reports (bench/labeler_agreement.py, which states the mapping
from MeSH to the 14 classes), its micro-F1 over the 13 findings is 0.90 on the half of the reports not used while
writing the rules. Use its CheXpert-14 output for relative comparisons between our own models; for numbers comparable
with papers, run CheXbert. On the synthetic reports the vocabulary is closed and it is exact by construction.
"""
import re

from data.synthetic import CXR_FINDINGS, PATH_FINDINGS

#### Sentences, clauses, cues ##########################################################################################
#
# CheXpert (Irvin et al. 2019, §"Labeler"; stanfordmlgroup/chexpert-labeler patterns/) decides each mention with rules over
# a dependency parse, in a fixed order: pre-negation uncertainty ("cannot exclude X", "X is not excluded", "no new X"),
# then negation ("no X", "without X", "free of X", "X is not seen", "X has resolved", "history of X", ...), then
# uncertainty ("possible X", "may represent X", "X versus Y", "suggestive of X", ...). Without a parser, a cue reaches a
# mention when both sit in one clause and the words between them are a coordinated list of noun phrases, which is the
# structure the parse rules follow: "no A, B, large C(,) or D is identified" negates all four.

_HEADER = re.compile(r"\b(final report|findings|impression|conclusion|comparison|indication|history|technique|"
                     r"examination|exam|clinical information|reason for exam(ination)?|wet read)\s*:", re.I)
_SENTENCE_END = re.compile(r"(?<!\d)\.(?!\d)|(?<=[!?])|\n")      # "1.5 cm" stays whole; a "?" stays (a hedge)

# No cue reaches across these: a contrast, a relative or subordinate clause, a semicolon or colon.
_CLAUSE_BREAK = re.compile(r"\b(but|however|although|though|except|aside from|apart from|otherwise|whereas|while|which|"
                           r"who|in the setting of|status post|s/p|following|after|despite)\b|[;:]")
_PRE_NEGATION_UNCERTAIN = (r"\b(cannot|can ?not|could not|can't|couldn't|unable to)( be)?( entirely)? (exclude|excluded|"
                           r"rule out|ruled out)\b|\bnot( be)?( entirely| completely)? (excluded|ruled out)\b|"
                           r"\bdifficult to (exclude|rule out)\b|\bno new\b")
_NEGATION = (r"\b(no(?!\s+(significant\s+|interval\s+|appreciable\s+|substantial\s+)?(change|increase|decrease|worsening|"
             r"improvement|progression|new)\b)|not|nor|without|negative for|free of|clear of|absence of|absent|lacks?|"
             r"lacking|lack of|resolution of|resolved|rather than|never|history of|removal of|disappearance of|"
             r"clearing of|exclude|ruled out)\b")
_UNCERTAIN = (r"\b(possible|possibly|probable|probably|likely|may|might|could|would|maybe|questionable|question of|"
              r"questioned|suspicious|suspect(ed|s)?|suspicion (of|for)|concern(ing)? (for|of)|worrisome|"
              r"suggest(s|ed|ive|ing|ion)?|versus|vs|and/or|equivocal|borderline|presumed|presumably|rule out|r/o|"
              r"evaluat(e|ion) for|assess(ment)? for|differential|either|indeterminate|uncertain|top[- ]normal|"
              r"not (entirely |completely )?(clear|certain)|obscur(ed|es|ing)|poorly evaluated|incompletely evaluated|"
              r"favou?r(s|ed)?|consider(ed)?|secondary to)\b")
_CUES = re.compile(f"(?P<pre_uncertain>{_PRE_NEGATION_UNCERTAIN})|(?P<negation>{_NEGATION})|(?P<uncertain>{_UNCERTAIN})")
_CUE_AT_START = re.compile(f"({_PRE_NEGATION_UNCERTAIN}|{_NEGATION}|{_UNCERTAIN})")

# After the mention, the first predicate decides: "X (and Y) is not seen", "X has resolved", "X cannot be excluded".
_PREDICATE = re.compile(r"\b(is|are|was|were|has|have|had|not|cannot|can not|could|may|might|no longer|absent|resolved|"
                        r"removed|cleared|versus|vs|and/or)\b|\?")
_NEGATION_POST = re.compile(r"((is|are|was|were|has|have|had)\s+)?(been\s+)?(not\s+(seen|identified|present|"
                            r"visuali[sz]ed|evident|appreciated|demonstrated|noted|detected|apparent|enlarged)|"
                            r"no longer\b|absent|resolved|removed|cleared)")
_UNCERTAIN_POST = re.compile(r"(cannot|can not|could not) be (entirely )?(excluded|ruled out)|((is|are) )?not (be )?"
                             r"(entirely )?(excluded|ruled out)|(is|are) (possible|possibly|likely|probable|probably|"
                             r"suspected|questioned|questionable|favou?red|(poorly|incompletely|not well) (evaluated|"
                             r"visuali[sz]ed|assessed)|obscured)|(may|might|could) be (present|seen)|versus|vs\b|and/or|\?")
_OPENER = re.compile(r"(there|this|these|it|with|the|a|an)\b")       # a list item never starts like a new clause
_MODIFIER = re.compile(r"(small|moderate|large|mild|mildly|marked|markedly|severe|new|trace|minimal|persistent|"
                       r"increased|increasing|decreased|decreasing|stable|unchanged|improved|improving|worse|worsening|"
                       r"worsened|enlarged|focal|patchy|dense|extensive|diffuse|bilateral|right|left|acute|chronic|"
                       r"definite|obvious|residual|known|prior|old|suspicious)\b")
_COMPLETED = re.compile(r"\b(is|are|was|were|has|have|had|seen|noted|identified|present)\b.*(,|\band\b)")
_CLOSURE = re.compile(r"\b(or|nor|and)\b(?!\s+(there|the|a|an|this|it)\b)")
_SIDE_WORDS = re.compile(r"\b(right|left|bilateral|bilaterally|both)\b")


def _sentences(text):
    """Lower-cased sentences with section headers removed."""
    text = _HEADER.sub(". ", text.replace("\r", "\n"))
    return [s.strip().lower() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _clause(sentence, start, end):
    """(lo, hi): the clause around sentence[start:end], between the clause breaks before and after it."""
    lo = max([b.end() for b in _CLAUSE_BREAK.finditer(sentence, 0, start)], default=0)
    after = _CLAUSE_BREAK.search(sentence, end)
    return lo, after.start() if after else len(sentence)


def _reaches(sentence, cue_end, start, hi):
    """Does a cue ending at cue_end govern the mention at start? Only across a coordinated list of noun phrases."""
    gap = sentence[cue_end:start]
    if re.search(r"(?<!compatible )(?<!consistent )(?<!associated )\bwith\b|\band\s+(there|the|this|it)\b", gap) or _COMPLETED.search(gap):
        return False                                     # "no X is seen, Y" / "no X with Y": the negated phrase ended
    for k, comma in enumerate(m.end() for m in re.finditer(",", gap)):
        item = re.sub(r"^\s*((and|or|nor)\s+)?", "", gap[comma:])
        if _OPENER.match(item) or (_CUE_AT_START.match(item) and not _MODIFIER.match(item)):
            return False                                 # ", the heart ..." / ", possible ...": a new clause or scope
        if _MODIFIER.match(item) and not _CLOSURE.search(sentence, cue_end + comma, hi):
            return False                                 # "No effusion, small right pneumothorax." is no list
    return True


def _classify(sentence, start, end):
    """1 / 0 / -1 for the mention sentence[start:end], in CheXpert's order (pre-negation uncertainty, negation,
    uncertainty) over the cues that reach it: before it within its clause, inside it ("is not enlarged"), or the
    first predicate after it ("... or pneumothorax is identified" / "is not seen" / "cannot be excluded")."""
    lo, hi = _clause(sentence, start, end)
    kinds = set()
    for cue in _CUES.finditer(sentence, lo, end):
        if cue.end() <= start and not _reaches(sentence, cue.end(), start, hi):
            continue
        kinds.add(next(k for k in ("pre_uncertain", "negation", "uncertain") if cue.group(k)))
    after = sentence[end:hi]
    first = _PREDICATE.search(after)
    if first and not re.search(r"(,|\band)\s+(the|a|an|there|this|it)\b", after[:first.start()]):
        tail = after[first.start():]
        if _UNCERTAIN_POST.match(tail) or "?" in after:
            kinds.add("uncertain")
        elif _NEGATION_POST.match(tail):
            kinds.add("negation")
    for kind, value in (("pre_uncertain", -1), ("negation", 0), ("uncertain", -1)):
        if kind in kinds:
            return value
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
# Mention phrases, after CheXpert's phrases/mention lists (its substrings such as "opaci", "atelecta" kept as prefixes).
_CHEXPERT_PATTERNS = {
    "Atelectasis": r"atelecta\w*|(?<!vertebral body )(?<!compression )\bcollapse",
    "Cardiomegaly": r"cardiomegaly|(heart|cardiac silhouette|cardiac size|cardiac shadow|cardiac contour)( size)?"
                    r"( is| are| appears| remains)?( \w+ly| not| top normal to)? (enlarged|increased)|"
                    r"(enlargement|enlarged) (of the )?(heart|cardiac)|enlarged heart|cardiac enlargement|"
                    r"(heart|cardiac silhouette)( size)?( is| remains| appears)? (top[- ]normal|borderline)|"
                    r"borderline (heart|cardiac) (size|silhouette)",   # the last two hedged by their own cue word
    "Consolidation": r"consolidat\w*",
    "Edema": r"edema|(pulmonary |pulmonary vascular |vascular )congestion|heart failure|\bchf\b|kerley|cephalization|"
             r"vascular (indistinctness|prominence)|indistinct(ness)? (of the )?(pulmonary )?vessels",
    "Enlarged Cardiomediastinum": r"(cardio ?)?mediastin\w*( silhouette| contours?)?( is| are| appears)?( \w+ly| not)? "
                                  r"(widen\w*|enlarg\w*|prominen\w*)|(?<!non)(?<!non-)(widen\w*|enlarg\w*|prominen\w*) "
                                  r"(of the )?(\w+ )?(cardio ?)?mediastin\w*",
    "Fracture": r"fractur\w*",
    "Lung Lesion": r"(?<!calcified )nodul\w*|\bmass(es)?\b|nodular (densit|opacit)\w*|cavitary lesion|"
                   r"(lung|pulmonary|parenchymal) lesion|\blump\b|\btumou?r|neoplasm|carcinoma|malignan\w*",
    "Lung Opacity": r"opacit\w*|opacification|infiltrat\w*|air[- ]?space disease|haziness|\bhazy\b|"
                    r"(increased|parenchymal|airspace|alveolar) densit(y|ies)|decreased translucency|"
                    r"interstitial (markings?|pattern|lung disease)|reticula(r|tion)\w*|(?<!pleural )(?<!pleural-)"
                    r"(?<!pleuroparenchymal )(?<!pleural parenchymal )\bscar(ring|s)?\b|peribronchial (wall )?thickening",
    "Pleural Effusion": r"(?<!pericardial )effusions?|pleural fluid|hydrothorax",
    "Pleural Other": r"pleural thickening|thickening of the pleura|pleural plaques?|fibrothorax|"
                     r"pleur(al|o)[- ]?(parenchymal )?scar\w*|pleural calcification|apical (pleural )?cap(ping)?",
    "Pneumonia": r"pneumonia|infection|infectious( process)?",
    "Pneumothorax": r"pneumothora(x|ces)",
    "Support Devices": r"pacemaker|pacer|\bicd\b|defibrillator|catheter|(?<!pleural )(?<!septal )(?<!skin )\blines?\b|"
                       r"picc|port-?a-?cath|mediport|\bport\b|\btubes?\b|\bett\b|drains?\b|\bstents?\b|sternotomy wires?|"
                       r"\bwires?\b|\bclips?\b|hardware|arthroplast\w*|\bscrews?\b|cannula|\bcoils?\b|prosthe\w*|"
                       r"devices?|\bleads?\b|valve (replacement|prosthesis)|(prosthetic|replaced) valve",
}
# Matches that look like a mention but are none (CheXpert's phrases/unmention lists, and what real reports showed):
# a healed granulomatous infection is no pneumonia, a calcified nodule is a granuloma, not a lesion.
_CHEXPERT_UNMENTION = {
    "Pneumonia": r"granulomatous (infection|disease)|(old|prior|remote|healed|previous|past) (granulomatous )?"
                 r"(infection|infectious)|sequelae? of (prior |old |previous )?(granulomatous )?infection",
    "Lung Lesion": r"calcified (nodul|mass)\w*|massive",
}
# Mentions that are uncertain at best: CheXpert reads "blunting of the costophrenic angle" as a hedged finding.
_CHEXPERT_WEAK = {
    "Pleural Effusion": r"blunting of the( \w+)? costophrenic|costophrenic angles?( is| are)? (\w+ly )?blunt\w*|"
                        r"blunt\w* (of )?(the )?(\w+ )?costophrenic",
}
# Normal statements that CheXpert counts as negative mentions although no negation word is used.
_CHEXPERT_NORMAL = {
    "Cardiomegaly": r"(heart|cardiac silhouette|cardiac contours?)( size)?( and [\w ]+?)? (is |are |remains |appears )?"
                    r"(normal|within normal limits|unremarkable|not enlarged)|normal (heart|cardiac) (size|silhouette)|"
                    r"heart is normal in size",
    "Enlarged Cardiomediastinum": r"(cardio ?)?mediastin\w*( silhouettes?| contours?| size)?( and [\w ]+?)? (is |are |remains |"
                                  r"appears )?(normal|unremarkable|within normal limits|stable)|normal (cardio ?)?mediastin",
    "Pleural Effusion": r"costophrenic angles? (is |are )?(sharp|clear)",
}
# CheXpert's "No Finding": no pathology positive or uncertain, counting findings outside the 14 classes too (its
# phrases/mention/no_finding.txt, e.g. emphysema, scoliosis, calcified granuloma, hyperinflation).
_OTHER_FINDING = (r"emphysema|blunt\w*|elevat\w*|eventration|scoliosis|kyphosis|degenera\w*|calcifi\w*|"
                  r"hyperinflat\w*|hyperexpan\w*|bronchospasm|asthma|hernia|\bcopd\b|thickening|plaques?|"
                  r"osteophyt\w*|atheroscler\w*|osteopeni\w*|metasta\w*|granulom\w*|pneumomediastinum|pneumoperitoneum|"
                  r"bullae|bullous|aspiration|contusion|cuffing|\bfibrosis|bronchiectasis|bronchitis|bronchiolitis|"
                  r"volume loss|deformity|hemorrhage|hematoma|lucency|tortuous|tortuosity|ectatic|aneurysm|"
                  r"lymphadenopathy|adenopathy|thoracentesis")
_CHEXPERT_RE = {k: re.compile(v) for k, v in _CHEXPERT_PATTERNS.items()}
_CHEXPERT_UNMENTION_RE = {k: re.compile(v) for k, v in _CHEXPERT_UNMENTION.items()}
_CHEXPERT_WEAK_RE = {k: re.compile(v) for k, v in _CHEXPERT_WEAK.items()}
_CHEXPERT_NORMAL_RE = {k: re.compile(v) for k, v in _CHEXPERT_NORMAL.items()}
_OTHER_FINDING_RE = re.compile(_OTHER_FINDING)


def _chexpert_mentions(sentences, name):
    """Classified mentions of one class: matches inside an unmention phrase are dropped, weak ones capped at -1."""
    values = []
    for s in sentences:
        unmentioned = [m.span() for m in _CHEXPERT_UNMENTION_RE[name].finditer(s)] if name in _CHEXPERT_UNMENTION_RE else []
        for m in _CHEXPERT_RE[name].finditer(s):
            if not any(a < m.end() and m.start() < b for a, b in unmentioned):
                values.append(_classify(s, m.start(), m.end()))
        if name in _CHEXPERT_WEAK_RE:
            values += [-1 if _classify(s, m.start(), m.end()) else 0 for m in _CHEXPERT_WEAK_RE[name].finditer(s)]
    return values


def chexpert_labels(text):
    """{CheXpert class: 1 | 0 | -1 | None} for a real (e.g. MIMIC-CXR findings or impression) report.

    'No Finding' is 1 when no pathology (every class but Support Devices, and the other findings CheXpert lists) is
    positive or uncertain, else None, as in the CheXpert labeler. A positive or uncertain "CHF" / "heart failure" also
    makes Cardiomegaly at least uncertain (CheXpert's one cross-class rule). See the module docstring for how this
    compares with CheXpert / CheXbert."""
    if not isinstance(text, str):
        raise ValueError(f"chexpert_labels: text must be a str, got {type(text).__name__}")
    sentences = _sentences(text)
    out = {}
    for name in CHEXPERT_CLASSES:
        if name == "No Finding":
            continue
        values = _chexpert_mentions(sentences, name)
        if name in _CHEXPERT_NORMAL_RE and any(_CHEXPERT_NORMAL_RE[name].search(s) for s in sentences):
            values.append(0)
        out[name] = _aggregate(values)
    heart_failure = [v for s in sentences for m in re.finditer(r"heart failure|\bchf\b", s)
                     for v in [_classify(s, m.start(), m.end())] if v != 0]
    if heart_failure:
        out["Cardiomegaly"] = _aggregate([out["Cardiomegaly"], -1])
    pathology = [out[c] for c in CHEXPERT_CLASSES if c not in ("No Finding", "Support Devices")]
    other = [_classify(s, m.start(), m.end()) for s in sentences for m in _OTHER_FINDING_RE.finditer(s)]
    out["No Finding"] = None if any(v in (1, -1) for v in pathology + other) else 1
    return {c: out[c] for c in CHEXPERT_CLASSES}
