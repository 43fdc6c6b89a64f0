"""data/labeler.py: exact on generated reports, right on hand-written negation/uncertainty cases and MIMIC-like text."""
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
    ("Increased interstitial markings concerning for pulmonary edema.", {"Edema": -1}),
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
