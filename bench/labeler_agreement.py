"""Agreement of data/labeler.chexpert_labels with human-coded reports: IU X-ray (Open-i) and its MeSH codes.

    python bench/labeler_agreement.py indiana_reports.csv              # Kaggle "Chest X-rays (Indiana University)"
    python bench/labeler_agreement.py indiana_reports.csv --errors 20  # + the first misses / false alarms per class

The IU X-ray collection (Demner-Fushman et al. 2016, JAMIA 23(2):304) has 3,955 chest X-ray reports whose findings were
coded by hand with MeSH terms ("Cardiomegaly/mild", "Opacity/lung/base/left", ...). The Kaggle / Open-i CSV
(`indiana_reports.csv`: uid, MeSH, Problems, image, indication, comparison, findings, impression) is CC BY-NC-ND 4.0,
so it is not shipped here: point this script at your copy. The coders list what is present, never what is ruled out,
so the comparison is binary: a class is positive for the humans when one of its MeSH terms below is coded, and for the
labeler when it labels the report (findings + impression) 1 (column `pos`) or 1 / -1 (column `pos+unc`, uncertain
counted as positive). Reports coded "No Indexing" or with no text are left out.

MeSH -> CheXpert mapping (heading, and a modifier where one is needed):
  Atelectasis                 Pulmonary Atelectasis
  Cardiomegaly                Cardiomegaly; Cardiac Shadow/enlarged
  Consolidation               Consolidation
  Edema                       Pulmonary Edema; Pulmonary Congestion; Heart Failure
  Enlarged Cardiomediastinum  Mediastinum/enlarged|prominent|widened
  Fracture                    Fractures, Bone
  Lung Lesion                 Nodule; Mass; Lung Neoplasms
  Lung Opacity                Opacity; Airspace Disease; Infiltrate; Lung Diseases, Interstitial; Markings/interstitial;
                              Cicatrix/lung (CheXpert counts scarring and interstitial markings as opacity)
  No Finding                  the Problems column is exactly "normal"
  Pleural Effusion            Pleural Effusion
  Pleural Other               Thickening/pleura; Cicatrix/pleura; Pleura
  Pneumonia                   Pneumonia
  Pneumothorax                Pneumothorax; Hydropneumothorax; Hemopneumothorax
  Support Devices             Catheters, Indwelling; Implanted Medical Device; Medical Device; Tube, Inserted; Stents;
                              Surgical Instruments
Caveats: the MeSH codes are not CheXpert labels. "Cardiomegaly/borderline" is coded as cardiomegaly where CheXpert
says uncertain; "Costophrenic Angle/blunted" is not coded as an effusion; No Finding in CheXpert ignores findings
outside its lists that IU codes (a calcified granuloma is no finding for CheXpert, not "normal" for IU).
"""
import argparse
import csv
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root, for data/
from data.labeler import CHEXPERT_CLASSES, chexpert_labels  # noqa: E402

MESH_MAP = {  # class -> [(MeSH heading, required modifier regex or None)]
    "Atelectasis": [("Pulmonary Atelectasis", None)],
    "Cardiomegaly": [("Cardiomegaly", None), ("Cardiac Shadow", "enlarged")],
    "Consolidation": [("Consolidation", None)],
    "Edema": [("Pulmonary Edema", None), ("Pulmonary Congestion", None), ("Heart Failure", None)],
    "Enlarged Cardiomediastinum": [("Mediastinum", "enlarged|prominent|widened")],
    "Fracture": [("Fractures, Bone", None)],
    "Lung Lesion": [("Nodule", None), ("Mass", None), ("Lung Neoplasms", None)],
    "Lung Opacity": [("Opacity", None), ("Airspace Disease", None), ("Infiltrate", None),
                     ("Lung Diseases, Interstitial", None), ("Markings", "interstitial"), ("Cicatrix", "lung")],
    "Pleural Effusion": [("Pleural Effusion", None)],
    "Pleural Other": [("Thickening", "pleura"), ("Cicatrix", "pleura"), ("Pleura", None)],
    "Pneumonia": [("Pneumonia", None)],
    "Pneumothorax": [("Pneumothorax", None), ("Hydropneumothorax", None), ("Hemopneumothorax", None)],
    "Support Devices": [("Catheters, Indwelling", None), ("Implanted Medical Device", None), ("Medical Device", None),
                        ("Tube, Inserted", None), ("Stents", None), ("Surgical Instruments", None)],
}


def human_labels(mesh: str, problems: str) -> dict:
    """{class: True/False} from one report's MeSH codes ("Heading/modifier/...;Heading/...")."""
    terms = [t.strip().split("/") for t in mesh.split(";") if t.strip()]
    out = {c: any(t[0] == heading and (need is None or any(re.fullmatch(need, m) for m in t[1:]))
                  for t in terms for heading, need in MESH_MAP[c]) for c in MESH_MAP}
    out["No Finding"] = problems.strip().lower() == "normal"
    return out


def read_reports(path: str) -> list[dict]:
    """Rows with a coded MeSH field and some findings / impression text."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        missing = {"MeSH", "Problems", "findings", "impression"} - set(reader.fieldnames or [])
        if missing:
            raise SystemExit(f"error: {path}: missing column(s) {sorted(missing)}; expected the Open-i / Kaggle "
                             f"indiana_reports.csv (uid, MeSH, Problems, ..., findings, impression)")
        rows = list(reader)
    keep = []
    for r in rows:
        text = " ".join(x.strip() for x in (r["findings"], r["impression"]) if x and x.strip())
        if text and r["MeSH"].strip() and r["MeSH"].strip() != "No Indexing":
            keep.append({"uid": r.get("uid", str(len(keep))), "text": text, "human": human_labels(r["MeSH"], r["Problems"])})
    return keep


def scores(pairs) -> dict:
    """pairs: [(human bool, predicted bool)] -> support, precision, recall, F1."""
    tp = sum(h and p for h, p in pairs)
    fp = sum(p and not h for h, p in pairs)
    fn = sum(h and not p for h, p in pairs)
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {"support": tp + fn, "precision": precision, "recall": recall, "f1": f1}


def agreement(reports: list[dict]) -> dict:
    """{class: {'pos': scores, 'pos+unc': scores}} plus 'micro' over the 13 finding classes (No Finding apart)."""
    predicted = [chexpert_labels(r["text"]) for r in reports]
    out = {}
    for mode, positive in (("pos", (1,)), ("pos+unc", (1, -1))):
        every = []
        for c in CHEXPERT_CLASSES:
            pairs = [(r["human"][c], p[c] in positive) for r, p in zip(reports, predicted)]
            out.setdefault(c, {})[mode] = scores(pairs)
            every += pairs if c != "No Finding" else []
        out.setdefault("micro (13 findings)", {})[mode] = scores(every)
    return out, predicted


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", help="indiana_reports.csv (Open-i / Kaggle IU X-ray reports with MeSH codes)")
    p.add_argument("--errors", type=int, default=0, help="print up to N disagreements per class (report ids + text)")
    p.add_argument("--uids", choices=("all", "even", "odd"), default="all",
                   help="a half of the reports by uid parity (e.g. develop rules on one half, report the other)")
    args = p.parse_args(argv)
    if not os.path.isfile(args.csv):
        raise SystemExit(f"error: {args.csv} is not a file")
    reports = read_reports(args.csv)
    if args.uids != "all":
        reports = [r for r in reports if str(r["uid"]).isdigit() and int(r["uid"]) % 2 == (args.uids == "odd")]
    if not reports:
        raise SystemExit(f"error: {args.csv}: no report with MeSH codes and text")
    result, predicted = agreement(reports)
    print(f"{len(reports)} reports from {args.csv} (uids: {args.uids}); human = MeSH codes, labeler = chexpert_labels")
    print(f"| class | support | P (pos) | R (pos) | F1 (pos) | P (pos+unc) | R (pos+unc) | F1 (pos+unc) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for c, row in result.items():
        a, b = row["pos"], row["pos+unc"]
        print(f"| {c} | {a['support']} | {a['precision']:.3f} | {a['recall']:.3f} | {a['f1']:.3f} | "
              f"{b['precision']:.3f} | {b['recall']:.3f} | {b['f1']:.3f} |")
    for c in CHEXPERT_CLASSES if args.errors else ():
        wrong = [(r, pr[c]) for r, pr in zip(reports, predicted) if r["human"][c] != (pr[c] in (1, -1))]
        for r, value in wrong[:args.errors]:
            kind = "missed" if r["human"][c] else "false alarm"
            print(f"  {c}: {kind} (labeler {value}) uid {r['uid']}: {r['text'][:300]}")
    return result


if __name__ == "__main__":
    main()
