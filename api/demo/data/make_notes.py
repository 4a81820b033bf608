"""Generate api/demo/data/notes.csv: a synthetic clinical-notes triage set (urgent vs routine).

Deterministic: a fixed seed, fixed templates and vocabulary, no real patient data. Each note is an opener
(who/where, shared by both classes) + one scenario sentence group + optional vitals + an optional closer
(shared by both classes). Scenarios deliberately share vocabulary across classes ("chest pain", "bleeding",
"short of breath", "refill", "follow-up", "vaccine", "stroke" occur in both) so that no single word decides
the label; negation, onset, severity, vitals and context do.

Usage: python make_notes.py OUT.csv   (prints a few statistics)
"""

from __future__ import annotations

import csv
import random
import sys
from collections import Counter

SEED = 20240604
PER_CLASS = 120

AGES = list(range(19, 92))
SEXES = [("F", "female", "woman"), ("M", "male", "man")]
OPENERS = [
    "{age}yo {s} {via}.",
    "{age} y/o {sex} {via}.",
    "Pt, {age}-year-old {word}, {via}.",
    "{via_cap}: {age}{s}.",
    "{age}{s}, {via}.",
    "Triage note, {age}-year-old {word}.",
    "{age} yr old {sex}, {via}.",
]
VIA = [
    "calling the nurse line",
    "via patient portal message",
    "walk-in at front desk",
    "phone call from daughter",
    "at clinic visit",
    "message left overnight",
    "video visit",
    "phone call from spouse",
    "in person at reception",
]
CLOSERS = [
    "",
    "",
    "",
    "Triage RN reviewing.",
    "Pt asks for a call back.",
    "Allergies: NKDA.",
    "PMH on file.",
    "Meds reviewed.",
    "Chart updated.",
    "Pt aware of plan.",
    "Spoke with pt directly.",
    "Message routed to provider.",
]

# Abnormal vitals per urgent scenario group (urgent only, and not always present).
ABNORMAL_VITALS = {
    "chest_pain": [
        "HR {hr_hi}, BP {sbp_lo}/{dbp_lo}.",
        "HR {hr_hi}, SpO2 {spo2}%.",
        "BP {sbp_hi}/{dbp_hi}, HR {hr_hi}.",
    ],
    "breathing": [
        "SpO2 {spo2_lo}% on room air.",
        "RR {rr_hi}, SpO2 {spo2_lo}%.",
        "HR {hr_hi}, RR {rr_hi}.",
    ],
    "stroke": ["BP {sbp_hi}/{dbp_hi}.", "BP {sbp_hi}/{dbp_hi}, HR {hr}."],
    "sepsis": [
        "Temp {t_hi}, HR {hr_hi}, BP {sbp_lo}/{dbp_lo}.",
        "HR {hr_hi}, RR {rr_hi}, temp {t_hi}.",
    ],
    "bleeding": ["HR {hr_hi}, BP {sbp_lo}/{dbp_lo}.", "BP {sbp_lo}/{dbp_lo}."],
    "anaphylaxis": [
        "SpO2 {spo2_lo}%, BP {sbp_lo}/{dbp_lo}.",
        "RR {rr_hi}, HR {hr_hi}.",
    ],
}
# Normal vitals (both classes).
NORMAL_VITALS = [
    "HR {hr}, BP {sbp}/{dbp}.",
    "SpO2 {spo2}% on room air.",
    "Temp {t}, HR {hr}.",
    "BP {sbp}/{dbp}, RR {rr}.",
    "Vitals stable.",
    "Vitals within normal limits.",
]


def vitals_values(rng: random.Random) -> dict[str, object]:
    return {
        "hr": rng.randint(60, 92),
        "hr_hi": rng.randint(118, 148),
        "sbp": rng.randint(108, 136),
        "dbp": rng.randint(64, 86),
        "sbp_lo": rng.randint(72, 88),
        "dbp_lo": rng.randint(38, 52),
        "sbp_hi": rng.randint(205, 235),
        "dbp_hi": rng.randint(122, 138),
        "spo2": rng.randint(96, 99),
        "spo2_lo": rng.randint(81, 89),
        "rr": rng.randint(12, 18),
        "rr_hi": rng.randint(26, 34),
        "t": f"{rng.uniform(36.4, 37.4):.1f}",
        "t_hi": f"{rng.uniform(38.9, 40.2):.1f}",
    }


def pick(rng: random.Random, options: list[str]) -> str:
    return rng.choice(options)


# Each scenario returns a sentence group; {x} fields are filled from the small vocabularies below.
DURATION_ACUTE = [
    "20 minutes",
    "30 min",
    "about an hour",
    "90 minutes",
    "40 min",
    "45 minutes",
    "2 hours",
]
DURATION_CHRONIC = [
    "3 weeks",
    "several months",
    "years",
    "2 weeks",
    "a month",
    "since last winter",
    "10 days",
]
ROUTINE_MEDS = [
    "lisinopril",
    "atorvastatin",
    "metformin",
    "levothyroxine",
    "amlodipine",
    "sertraline",
    "albuterol inhaler",
    "omeprazole",
    "losartan",
]
ANTICOAG = ["warfarin", "apixaban", "rivaroxaban"]

URGENT = {
    "chest_pain": [
        "Crushing chest pain radiating to the left arm for {acute}, sweaty, nauseated.",
        "Chest pain started {acute} ago at rest, pressure-like, with jaw pain and clammy skin.",
        "Sudden central chest tightness for {acute}, not relieved by nitro, feels short of breath.",
        "Reports chest pain with exertion now also at rest, last {acute}, looks grey and diaphoretic.",
    ],
    "breathing": [
        "Severe shortness of breath at rest, cannot finish sentences, lips look blue.",
        "Short of breath, worsening over {acute}, using accessory muscles, inhaler not helping.",
        "Struggling to breathe for {acute}, wheezing loudly, unable to lie flat, no response to inhaler.",
        "Sudden shortness of breath and sharp pleuritic chest pain, recent long flight, calf swollen.",
    ],
    "stroke": [
        "Sudden facial droop and slurred speech, onset {acute} ago.",
        "Daughter reports new right arm weakness and confused speech starting {acute} ago.",
        "Came for a refill but has sudden trouble speaking and left leg weakness since {acute_since}.",
        "History of stroke, now new sudden vision loss in one eye and arm numbness for {acute}.",
    ],
    "sepsis": [
        "Fever with rigors, new confusion, very low urine output today. Denies cough.",
        "Feels hot and shaky, mottled skin, drowsy, recent urinary infection not improving on antibiotics.",
        "Post-op day 5 with fever, wound red and draining pus, heart racing, feels faint.",
        "Chemotherapy last week, now fever with chills, very weak, no improvement with paracetamol.",
    ],
    "bleeding": [
        "Vomiting bright red blood twice in {acute}, dizzy on standing.",
        "Heavy bleeding from a leg laceration, soaking through towels despite pressure.",
        "On {anticoag}, fell and hit head, now vomiting and drowsy.",
        "Black tarry stools since yesterday and fainted in the bathroom.",
        "Postpartum day 3, bleeding soaking a pad every 30 minutes, feels lightheaded.",
    ],
    "anaphylaxis": [
        "Swollen lips and tongue, throat tight after eating peanuts {acute} ago.",
        "Ten minutes after flu vaccine developed hives, wheeze and throat swelling.",
        "Bee sting, now widespread hives, hoarse voice and trouble swallowing.",
    ],
    "other": [
        "Abdominal pain mild at first, now severe for {acute}, rigid belly, vomiting, cannot keep still.",
        "Type 1 diabetic, glucose reading HIGH, vomiting all night, deep rapid breathing.",
        "Seizure lasting over 5 minutes, still not fully awake.",
        "States plan to end life tonight and has pills saved, alone at home.",
        "Worst headache of life, came on suddenly {acute} ago, neck stiff.",
        "At routine follow-up reports sudden severe headache, blurred vision and new confusion.",
        "Vomiting and diarrhoea for two days, no urine for 12 hours, very sleepy, sunken eyes.",
    ],
}

ROUTINE = {
    "refill": [
        "Requests refill of {med}, runs out next week, no side effects.",
        "Needs 90 day supply of {med} sent to new pharmacy.",
        "Asking for {med} refill, taking as prescribed, feels well.",
        "Out of {med} refills, last seen {chronic} ago, no new complaints.",
        "Known COPD, mild shortness of breath on stairs unchanged for {chronic}, needs inhaler refill.",
        "History of stroke years ago, stable, requests refill of {med}.",
    ],
    "follow_up": [
        "Routine follow-up for blood pressure, home readings fine, no headaches.",
        "Diabetes review, A1c due, checks sugars at home and has no concerns.",
        "Wants to book follow-up to discuss lab results, feels fine.",
        "Follow-up after ankle sprain {chronic} ago, walking normally now.",
        "Annual physical due, asks to schedule fasting labs.",
        "Follow-up for anxiety, sleeping better on {med}.",
    ],
    "cold": [
        "Runny nose, sore throat and mild cough for {chronic_short}, eating and drinking fine.",
        "Mild cold symptoms, low-grade temp, no shortness of breath, asking about rest.",
        "Stuffy nose and sneezing for {chronic_short} and wants advice on decongestants.",
        "Scratchy throat, mild cough, breathing comfortably.",
        "Mild fever yesterday that settled with paracetamol, eating and drinking well.",
    ],
    "vaccine": [
        "Wants to schedule flu vaccine and a tetanus booster and asks about timing.",
        "Asks whether shingles vaccine is covered, no acute issues.",
        "Sore arm after flu vaccine yesterday, no swelling of face or throat, no rash.",
        "Needs travel vaccines before a trip in two months.",
        "Due for routine pneumococcal vaccine, well, no fever.",
    ],
    "paperwork": [
        "Needs sick note for work for last week's cold, now recovered.",
        "Insurance form to be completed and signed, drop off at front desk.",
        "Requests copy of records for new specialist.",
        "School sports physical form needed by Friday.",
        "Disability paperwork renewal, condition unchanged.",
    ],
    "minor": [
        "Chest wall soreness after gym, worse pressing on rib, breathing normally.",
        "Occasional brief chest twinge for {chronic}, not with exertion, already had normal cardiac workup.",
        "Small cut on finger while cooking, bleeding stopped with pressure and no numbness.",
        "Gums bleed a little when brushing, no other bleeding.",
        "One nosebleed this morning, stopped after 5 minutes of pressure.",
        "Mild low back ache after gardening, walking fine, no numbness.",
        "Sudden sneezing fits every spring, known hay fever, wants antihistamine advice.",
        "Sudden urge to urinate at night for {chronic}, no pain or fever, wants to book a check.",
        "Occasional heartburn after large meals, no chest pain with exertion.",
        "Mild headache at end of workday, relieved by rest, no vision change.",
        "Dizzy briefly when standing up too fast, resolved, drinking more water.",
    ],
}

# Background sentences shared by both classes (add length and shared vocabulary).
CONTEXT = [
    "PMH: hypertension, type 2 diabetes.",
    "PMH: asthma since childhood.",
    "History of atrial fibrillation on {anticoag}.",
    "Takes {med} daily.",
    "Lives with partner and two children.",
    "Last seen in clinic {chronic} ago.",
    "Works night shifts as a nurse.",
    "Former smoker, quit 10 years ago.",
    "Recently moved to the area and new to the practice, records requested.",
    "Speaks limited English, daughter interpreting.",
    "Known anxiety, sees counsellor monthly.",
    "Had a hip replacement last year.",
]
NEGATIONS = [
    "Denies chest pain or shortness of breath.",
    "No fever, no bleeding.",
    "Denies weakness or speech change.",
    "No trouble breathing.",
    "Denies new symptoms.",
    "No sudden weakness or vision change.",
    "No severe pain.",
    "Not worried about anything else.",
]
URGENT_EXTRAS = [
    "Symptoms getting worse.",
    "Family very worried.",
    "Lives alone.",
    "Has not taken anything yet.",
    "No prior episodes like this.",
    "Took aspirin at home.",
    "Denies recent trauma.",
    "No known allergies.",
    "Was fine and well yesterday.",
]
ROUTINE_EXTRAS = [
    "Partner a little worried but pt feels fine.",
    "Has not had any problems since last visit.",
    "Happy to wait for a routine appointment.",
    "Would like a morning slot if possible.",
    "Feels very well otherwise.",
]


def fill(rng: random.Random, template: str) -> str:
    return template.format(
        acute=pick(rng, DURATION_ACUTE),
        acute_since=pick(rng, ["this morning", "breakfast", "about 40 minutes ago", "lunch"]),
        chronic=pick(rng, DURATION_CHRONIC),
        chronic_short=pick(rng, ["3 days", "2 days", "a few days", "4 days"]),
        med=pick(rng, ROUTINE_MEDS),
        anticoag=pick(rng, ANTICOAG),
    )


def opener(rng: random.Random, postpartum: bool = False) -> str:
    s, sex, word = SEXES[0] if postpartum else rng.choice(SEXES)
    age = rng.randint(19, 42) if postpartum else rng.choice(AGES)
    via = pick(rng, VIA)
    return pick(rng, OPENERS).format(
        age=age, s=s, sex=sex, word=word, via=via, via_cap=via[0].upper() + via[1:]
    )


def make_note(rng: random.Random, label: str) -> str:
    vals = vitals_values(rng)
    body: list[str] = []
    if label == "urgent":
        group = rng.choice(sorted(URGENT))
        scenario = fill(rng, rng.choice(URGENT[group]))
        body.append(scenario)
        r = rng.random()
        if r < 0.45 and group in ABNORMAL_VITALS:
            body.append(rng.choice(ABNORMAL_VITALS[group]).format(**vals))
        elif r < 0.6:
            body.append(rng.choice(NORMAL_VITALS).format(**vals))
        if rng.random() < 0.35:
            body.append(rng.choice(URGENT_EXTRAS))
    else:
        group = rng.choice(sorted(ROUTINE))
        scenario = fill(rng, rng.choice(ROUTINE[group]))
        body.append(scenario)
        if rng.random() < 0.4:
            body.append(rng.choice(NORMAL_VITALS).format(**vals))
        if rng.random() < 0.3:
            body.append(rng.choice(NEGATIONS))
        if rng.random() < 0.25:
            body.append(rng.choice(ROUTINE_EXTRAS))
    parts = [opener(rng, postpartum=scenario.startswith("Postpartum"))]
    for context in rng.sample(CONTEXT, rng.choice([0, 0, 1, 1, 2])):
        parts.append(fill(rng, context))
    parts.extend(body)
    closer = rng.choice(CLOSERS)
    if closer:
        parts.append(closer)
    return " ".join(parts)


def generate(seed: int = SEED, per_class: int = PER_CLASS) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    for label in ("urgent", "routine"):
        n = 0
        while n < per_class:
            text = make_note(rng, label)
            words = len(text.split())
            if text in seen or not 10 <= words <= 60:
                continue
            seen.add(text)
            rows.append((text, label))
            n += 1
    rng.shuffle(rows)
    return rows


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "notes.csv"
    rows = generate()
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    lengths = [len(t.split()) for t, _ in rows]
    print(f"{len(rows)} rows, labels {Counter(lab for _, lab in rows)}, words {min(lengths)}-{max(lengths)}")


if __name__ == "__main__":
    main()
