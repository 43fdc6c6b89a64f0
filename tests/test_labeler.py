"""data/labeler.py: exact on generated reports, right on hand-written negation/uncertainty cases and MIMIC-like text,
and CheXpert-14 on real-style report sentences: positive, negated and uncertain for every class, and the scope rules."""
import csv
import sys
from pathlib import Path

import pytest

from data.labeler import CHEXPERT_CLASSES, chexpert_labels, report_labels
from data.synthetic import CXR_FINDINGS, PATH_FINDINGS, SyntheticDataset


@pytest.mark.parametrize("domain", ["cxr", "path"])
@pytest.mark.parametrize("shuffle,n", [(False, 1000), (True, 300)])
def test_labeler_recovers_the_ground_truth_of_generated_reports_exactly(domain, shuffle, n):
    ds = SyntheticDataset(domain, "test", shuffle_sentences=shuffle, seed=11)
    pairs = [ds[i] for i in range(n)]
    wrong = [(p.report, p.labels) for p in pairs if report_labels(p.report, domain) != p.labels]
    assert not wrong, wrong[:3]


def test_labeler_returns_every_finding_key_in_order():
    assert list(report_labels("Normal chest.", "cxr")) == list(CXR_FINDINGS)
    assert list(report_labels("Unremarkable stroma.", "path")) == list(PATH_FINDINGS)
    assert set(report_labels("Normal chest.").values()) == {0}


# (report, {finding: expected value}); findings not listed must be 0.
_CXR_CASES = [
    ("No pleural effusion.", {}),
    ("There is no pneumothorax.", {}),
    ("No evidence of pneumothorax.", {}),
    ("Negative for pneumothorax.", {}),
    ("Pneumothorax is not seen.", {}),
    ("The heart is not enlarged.", {}),
    ("Heart size is mildly enlarged.", {"cardiomegaly": 1}),
    ("Lungs are clear without consolidation or effusion.", {}),
    ("No pneumothorax or pleural effusion. Mild cardiomegaly.", {"cardiomegaly": 1}),
    ("There is no focal consolidation, but a small right pleural effusion is present.", {"effusion_right": 1}),
    ("No effusion, small right pneumothorax.", {"pneumothorax": 1}),
    ("Left pleural effusion has resolved.", {}),
    ("The previously seen pneumothorax has resolved.", {}),
    ("No change in the small left pleural effusion.", {"effusion_left": 1}),
    ("Possible small left pleural effusion.", {"effusion_left": -1}),
    ("Pneumothorax cannot be excluded.", {"pneumothorax": -1}),
    ("Cannot exclude a small left apical pneumothorax.", {"pneumothorax": -1}),
    ("Findings may represent pneumonia in the right lower lobe.", {"consolidation": -1}),
    ("Right lower lobe opacity, suggestive of consolidation.", {"consolidation": -1}),
    ("Questionable nodule in the right apex.", {"nodule": -1}),
    ("A nodule in the left upper lobe is not seen on this study.", {}),
    ("Bilateral pleural effusions.", {"effusion_right": 1, "effusion_left": 1}),
    ("Small right and moderate left pleural effusions.", {"effusion_right": 1, "effusion_left": 1}),
    ("No right effusion. Small left effusion.", {"effusion_left": 1}),
    ("Right upper lobe consolidation, left effusion and right pneumothorax.",
     {"consolidation": 1, "effusion_left": 1, "pneumothorax": 1}),
    ("Pacemaker leads in the right atrium and ventricle.", {"support_device": 1}),
    ("No lines or tubes.", {}),
    ("Large right apical pneumothorax with a visible pleural line.", {"pneumothorax": 1}),   # a pleural line is no device
    ("Effusion is unchanged and the pneumothorax has resolved.", {"effusion_right": 1, "effusion_left": 1}),
    ("Is there a pneumothorax?", {"pneumothorax": -1}),
]


@pytest.mark.parametrize("text,expected", _CXR_CASES)
def test_labeler_handles_handwritten_negation_uncertainty_and_laterality(text, expected):
    assert report_labels(text, "cxr") == {f: expected.get(f, 0) for f in CXR_FINDINGS}


_PATH_CASES = [
    ("The tissue lacks glandular structures. Mitoses are not identified.", {}),
    ("Fibrous stroma without glands. Cellularity is not increased.", {}),
    ("Possible focal necrosis.", {"necrosis": -1}),
    ("Markedly pleomorphic nuclei; no necrosis.", {"pleomorphism": 1}),
    ("Dense lymphocytic infiltrate around two glands.", {"inflammation": 1, "glands": 1}),
]


@pytest.mark.parametrize("text,expected", _PATH_CASES)
def test_pathology_labeler_handles_handwritten_cases(text, expected):
    assert report_labels(text, "path") == {f: expected.get(f, 0) for f in PATH_FINDINGS}


_MIMIC_CASES = [
    ("Heart size is normal. The lungs are clear. No pleural effusion or pneumothorax.",
     {"Cardiomegaly": 0, "Pleural Effusion": 0, "Pneumothorax": 0, "No Finding": 1}),
    ("Moderate cardiomegaly. Mild pulmonary edema. Small bilateral pleural effusions.",
     {"Cardiomegaly": 1, "Edema": 1, "Pleural Effusion": 1}),
    ("Right internal jugular central venous catheter terminates in the mid SVC. No pneumothorax.",
     {"Support Devices": 1, "Pneumothorax": 0, "No Finding": 1}),          # a device is no pathology
    ("Left lower lobe opacity may reflect atelectasis or pneumonia.",
     {"Lung Opacity": 1, "Atelectasis": -1, "Pneumonia": -1}),
    ("There is a 1.5 cm nodule in the right upper lobe.", {"Lung Lesion": 1}),
    ("No acute cardiopulmonary process.", {"No Finding": 1}),
    ("Mediastinal contours are normal. There is no focal consolidation, effusion, or pneumothorax.",
     {"Enlarged Cardiomediastinum": 0, "Consolidation": 0, "Pleural Effusion": 0, "Pneumothorax": 0, "No Finding": 1}),
    ("Healed left rib fractures. Endotracheal tube in standard position.", {"Fracture": 1, "Support Devices": 1}),
    ("Bibasilar atelectasis. Costophrenic angles are sharp.", {"Atelectasis": 1, "Pleural Effusion": 0}),
    ("Pleural thickening at the right apex. Cardiomediastinal silhouette is enlarged.",
     {"Pleural Other": 1, "Enlarged Cardiomediastinum": 1}),
    ("No evidence of acute fracture.", {"Fracture": 0, "No Finding": 1}),
    ("The heart size remains top normal.", {"Cardiomegaly": -1}),
    ("Increased interstitial markings concerning for pulmonary edema.", {"Edema": -1, "Lung Opacity": 1}),
    ("FINDINGS: PA and lateral views. Right upper lobe consolidation. IMPRESSION: Pneumonia.",
     {"Consolidation": 1, "Pneumonia": 1}),
]


@pytest.mark.parametrize("text,expected", _MIMIC_CASES)
def test_chexpert_labels_on_mimic_like_sentences(text, expected):
    got = chexpert_labels(text)
    assert list(got) == list(CHEXPERT_CLASSES)
    assert got == {c: expected.get(c) for c in CHEXPERT_CLASSES}


def test_labelers_reject_non_text_and_unknown_domain():
    with pytest.raises(ValueError, match="str"):
        report_labels(None)
    with pytest.raises(ValueError, match="domain"):
        report_labels("No effusion.", "mri")
    with pytest.raises(ValueError, match="str"):
        chexpert_labels(3)


# (sentence, class, expected value): for every CheXpert class one positive, one negated and one uncertain sentence at
# least, in the wording of real chest X-ray reports (MIMIC-CXR, IU X-ray style; written here, not copied).
_REAL_STYLE = [
    ("Bibasilar subsegmental atelectasis.", "Atelectasis", 1),
    ("Left lower lobe collapse.", "Atelectasis", 1),
    ("There is no evidence of atelectasis or consolidation.", "Atelectasis", 0),
    ("Streaky opacities at the lung bases may represent atelectasis.", "Atelectasis", -1),
    ("Left base opacity, atelectasis versus consolidation.", "Atelectasis", -1),
    ("Moderate cardiomegaly.", "Cardiomegaly", 1),
    ("The cardiac silhouette is mildly enlarged.", "Cardiomegaly", 1),
    ("The heart is not enlarged.", "Cardiomegaly", 0),
    ("Heart size is within normal limits.", "Cardiomegaly", 0),
    ("Borderline cardiomegaly.", "Cardiomegaly", -1),
    ("Mild cardiomegaly cannot be excluded on this AP view.", "Cardiomegaly", -1),
    ("Dense right lower lobe consolidation.", "Consolidation", 1),
    ("No focal consolidation.", "Consolidation", 0),
    ("The lungs are clear of focal consolidation.", "Consolidation", 0),
    ("Right base opacity may represent consolidation.", "Consolidation", -1),
    ("Mild interstitial pulmonary edema.", "Edema", 1),
    ("Pulmonary vascular congestion.", "Edema", 1),
    ("No typical findings of pulmonary edema.", "Edema", 0),
    ("Increased interstitial markings, edema versus atypical infection.", "Edema", -1),
    ("The cardiomediastinal silhouette is enlarged.", "Enlarged Cardiomediastinum", 1),
    ("Widening of the superior mediastinum.", "Enlarged Cardiomediastinum", 1),
    ("No mediastinal widening.", "Enlarged Cardiomediastinum", 0),
    ("Normal cardiomediastinal silhouette.", "Enlarged Cardiomediastinum", 0),
    ("Possible widening of the mediastinum.", "Enlarged Cardiomediastinum", -1),
    ("Healed left rib fractures.", "Fracture", 1),
    ("No displaced rib fractures.", "Fracture", 0),
    ("No acute fracture.", "Fracture", 0),
    ("A nondisplaced fracture of the left seventh rib cannot be excluded.", "Fracture", -1),
    ("There is a 2 cm mass in the right upper lobe.", "Lung Lesion", 1),
    ("Spiculated nodule in the left apex.", "Lung Lesion", 1),
    ("No suspicious pulmonary nodules.", "Lung Lesion", 0),
    ("Calcified nodule in the right upper lobe, consistent with a granuloma.", "Lung Lesion", None),
    ("Possible left upper lobe nodule.", "Lung Lesion", -1),
    ("Patchy bibasilar opacities.", "Lung Opacity", 1),
    ("Left basilar scarring.", "Lung Opacity", 1),
    ("The lungs are free of focal airspace disease.", "Lung Opacity", 0),
    ("Lungs are clear without infiltrate.", "Lung Opacity", 0),
    ("Questionable opacity at the right base.", "Lung Opacity", -1),
    ("No acute cardiopulmonary abnormality.", "No Finding", 1),
    ("Right PICC line with tip in the SVC. No pneumothorax.", "No Finding", 1),
    ("Possible small left pleural effusion.", "No Finding", None),
    ("Degenerative changes of the thoracic spine.", "No Finding", None),
    ("Small bilateral pleural effusions.", "Pleural Effusion", 1),
    ("Moderate left effusion with adjacent atelectasis.", "Pleural Effusion", 1),
    ("No pleural effusion.", "Pleural Effusion", 0),
    ("Resolved left pleural effusion.", "Pleural Effusion", 0),
    ("Small pericardial effusion.", "Pleural Effusion", None),
    ("Blunting of the left costophrenic angle.", "Pleural Effusion", -1),
    ("Possible small right pleural effusion.", "Pleural Effusion", -1),
    ("Biapical pleural thickening.", "Pleural Other", 1),
    ("Calcified pleural plaques.", "Pleural Other", 1),
    ("No pleural thickening.", "Pleural Other", 0),
    ("Question small effusion versus pleural thickening.", "Pleural Other", -1),
    ("Right lower lobe pneumonia.", "Pneumonia", 1),
    ("No evidence of pneumonia.", "Pneumonia", 0),
    ("No focal consolidation to suggest pneumonia.", "Pneumonia", 0),
    ("Findings may represent pneumonia.", "Pneumonia", -1),
    ("Left base opacity, concerning for infection.", "Pneumonia", -1),
    ("Calcified granulomas from old granulomatous infection.", "Pneumonia", None),
    ("Small left apical pneumothorax.", "Pneumothorax", 1),
    ("No pneumothorax.", "Pneumothorax", 0),
    ("The right pneumothorax has resolved.", "Pneumothorax", 0),
    ("Interval resolution of the right pneumothorax.", "Pneumothorax", 0),
    ("A tiny apical pneumothorax cannot be excluded.", "Pneumothorax", -1),
    ("Right PICC line with tip in the mid SVC.", "Support Devices", 1),
    ("Dual-chamber pacemaker leads in the right atrium and ventricle.", "Support Devices", 1),
    ("Median sternotomy wires.", "Support Devices", 1),
    ("The endotracheal tube has been removed.", "Support Devices", 0),
    ("Possible retained pacer wire fragment.", "Support Devices", -1),
    ("Findings consistent with emphysema.", "Support Devices", None),      # "consistent" holds no stent
]


@pytest.mark.parametrize("text,name,expected", _REAL_STYLE)
def test_chexpert_labels_real_style_sentence_for_every_class(text, name, expected):
    assert chexpert_labels(text)[name] == expected


def test_every_class_has_a_positive_negated_and_uncertain_real_style_case():
    seen = {c: {v for _, name, v in _REAL_STYLE if name == c} for c in CHEXPERT_CLASSES}
    assert all(seen[c] >= ({1, None} if c == "No Finding" else {1, 0, -1}) for c in CHEXPERT_CLASSES), seen


# Negation over a coordinated list and through adjectives (CheXpert's negation patterns follow the parse, so one "no"
# or "without" covers every conjunct): each sentence negates every class it names.
_NEGATED_LISTS = [
    ("No focal consolidation, suspicious pulmonary opacity, large pleural effusion, or pneumothorax is identified.",
     ("Consolidation", "Lung Opacity", "Pleural Effusion", "Pneumothorax")),
    ("No pneumothorax or large pleural effusion.", ("Pneumothorax", "Pleural Effusion")),
    ("The lungs are grossly clear without focal pneumonic consolidation, large effusion or pneumothorax.",
     ("Consolidation", "Pleural Effusion", "Pneumothorax")),
    ("No evidence of acute airspace disease, large pleural effusion or pneumothorax.",
     ("Lung Opacity", "Pleural Effusion", "Pneumothorax")),
    ("There is no pleural effusion, pneumothorax, or focal airspace disease.",
     ("Pleural Effusion", "Pneumothorax", "Lung Opacity")),
    ("No focal alveolar consolidation, no definite pleural effusion seen.", ("Consolidation", "Pleural Effusion")),
    ("Negative for pneumothorax or pleural effusion.", ("Pneumothorax", "Pleural Effusion")),
    ("The lungs are free of focal airspace disease, effusion and pneumothorax.",
     ("Lung Opacity", "Pleural Effusion", "Pneumothorax")),
    ("Pleural effusion, pneumothorax and consolidation are not seen.",
     ("Pleural Effusion", "Pneumothorax", "Consolidation")),
    ("No acute fracture, pneumothorax or definite effusion.", ("Fracture", "Pneumothorax", "Pleural Effusion")),
]


@pytest.mark.parametrize("text,negated", _NEGATED_LISTS)
def test_negation_covers_every_item_of_a_coordinated_list(text, negated):
    got = chexpert_labels(text)
    assert {c: got[c] for c in negated} == dict.fromkeys(negated, 0)
    assert got["No Finding"] == 1


# Where a cue's scope ends: (sentence, {class: expected}).
_SCOPES = [
    ("No effusion, small right pneumothorax.", {"Pleural Effusion": 0, "Pneumothorax": 1}),
    ("No pneumothorax, possible small left effusion.", {"Pneumothorax": 0, "Pleural Effusion": -1}),
    ("Right lower lobe consolidation, likely pneumonia.", {"Consolidation": 1, "Pneumonia": -1}),
    ("No pneumothorax is seen, and there is a small left effusion.", {"Pneumothorax": 0, "Pleural Effusion": 1}),
    ("Heart size is normal and there is a small left effusion.", {"Cardiomegaly": 0, "Pleural Effusion": 1}),
    ("Effusion is present and pneumothorax is not seen.", {"Pleural Effusion": 1, "Pneumothorax": 0}),
    ("No pneumothorax but a small right effusion persists.", {"Pneumothorax": 0, "Pleural Effusion": 1}),
    ("No change in the small right pleural effusion.", {"Pleural Effusion": 1}),
    ("No new consolidation.", {"Consolidation": -1}),                     # CheXpert: "no new X" is uncertain
    ("Atelectasis versus pneumonia in the left lower lobe.", {"Atelectasis": -1, "Pneumonia": -1}),
    ("Opacities may be compatible with scarring or subsegmental atelectasis.", {"Atelectasis": -1}),
    ("Mild CHF.", {"Edema": 1, "Cardiomegaly": -1}),                      # CheXpert's one cross-class rule
    ("Tiny left apical pneumothorax is not excluded.", {"Pneumothorax": -1}),
    ("Is there a pneumothorax?", {"Pneumothorax": -1}),
]


@pytest.mark.parametrize("text,expected", _SCOPES)
def test_cue_scopes_end_at_clauses_new_cues_and_unlisted_modifiers(text, expected):
    got = chexpert_labels(text)
    assert {c: got[c] for c in expected} == expected


def test_agreement_bench_scores_the_labeler_against_mesh_codes(tmp_path):
    """bench/labeler_agreement.py on three made-up reports in the Open-i CSV layout: counts by hand."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import labeler_agreement
    rows = [("1", "Cardiomegaly/mild;Pleural Effusion/left/small", "Cardiomegaly;Pleural Effusion",
             "Mild cardiomegaly. Small left pleural effusion.", "No pneumothorax."),
            ("2", "normal", "normal", "Lungs are clear. No effusion or pneumothorax.", "Normal chest."),
            ("3", "Pneumothorax/right", "Pneumothorax", "Heart size normal.", "Possible small right pneumothorax."),
            ("4", "No Indexing", "No Indexing", "Left of the study.", "")]
    path = tmp_path / "reports.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"])
        w.writerows([(u, m, p, "Xray Chest PA and Lateral", "", "", fi, im) for u, m, p, fi, im in rows])
    result = labeler_agreement.main([str(path)])
    assert result["Cardiomegaly"]["pos"] == {"support": 1, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    ptx = result["Pneumothorax"]
    assert ptx["pos"]["recall"] == 0.0 and ptx["pos+unc"]["recall"] == 1.0   # "possible": uncertain, not positive
    assert result["No Finding"]["pos"]["support"] == 1 and result["No Finding"]["pos"]["precision"] == 1.0
    micro = result["micro (13 findings)"]["pos"]                             # 3 coded findings, 2 found, 0 false
    assert (micro["support"], micro["precision"], round(micro["recall"], 3)) == (3, 1.0, 0.667)
    with pytest.raises(SystemExit, match="missing column"):
        (tmp_path / "other.csv").write_text("a,b\n1,2\n")
        labeler_agreement.main([str(tmp_path / "other.csv")])
