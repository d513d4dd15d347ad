"""The built-in multilingual sample corpus: template sentences over small per-language vocabularies.

Eight languages in six scripts (Latin: en, de, fi; Cyrillic: ru; Greek: el; Arabic: ar; CJK: zh; Devanagari: hi).
`fi` is held back from data_prep/sample.yaml for continued-pretraining experiments. The text has learnable
structure (fixed word order, closed vocabularies), so a tiny model's loss drops within a few hundred steps.
Output is JSONL (`text`, `lang`) per language and split, byte-identical for the same arguments.
"""

from __future__ import annotations

import contextlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from hierpt.data.recipe import Recipe, Source

LANGUAGES = ("en", "de", "ru", "el", "ar", "zh", "hi", "fi")
HELD_BACK = ("fi",)


@dataclass(frozen=True)
class Grammar:
    template: str  # slots: subj, verb, adj, obj, place
    subj: tuple[str, ...]
    verb: tuple[str, ...]
    adj: tuple[str, ...]
    obj: tuple[str, ...]
    place: tuple[str, ...]
    joiner: str = " "  # between sentences

    def sentence(self, rng: random.Random) -> str:
        slots = {name: rng.choice(getattr(self, name)) for name in ("subj", "verb", "adj", "obj", "place")}
        return self.template.format(**slots)


GRAMMARS = {
    "en": Grammar(
        "{subj} {verb} the {adj} {obj} {place}.",
        ("The farmer", "My sister", "The old teacher", "A young doctor", "Our neighbour", "The captain", "The baker",
         "Every student", "The painter", "The fisherman"),
        ("sees", "buys", "paints", "carries", "finds", "repairs", "sells", "remembers", "describes", "builds"),
        ("red", "quiet", "heavy", "beautiful", "broken", "new", "ancient", "bright", "cold", "wooden"),
        ("house", "boat", "letter", "garden", "bridge", "window", "book", "river", "table", "song"),
        ("in the morning", "near the market", "after the rain", "in the village", "by the sea", "before dinner",
         "on the hill", "during winter"),
    ),
    "de": Grammar(
        "{subj} {verb} das {adj} {obj} {place}.",
        ("Der Bauer", "Meine Schwester", "Der alte Lehrer", "Eine junge Ärztin", "Unser Nachbar", "Der Kapitän",
         "Der Bäcker", "Jeder Student", "Die Malerin", "Der Fischer"),
        ("sieht", "kauft", "malt", "trägt", "findet", "repariert", "verkauft", "beschreibt", "sucht", "baut"),
        ("rote", "stille", "schwere", "schöne", "kaputte", "neue", "alte", "helle", "kalte", "hölzerne"),
        ("Haus", "Boot", "Buch", "Fenster", "Bild", "Lied", "Schiff", "Dach", "Feld", "Tor"),
        ("am Morgen", "neben dem Markt", "nach dem Regen", "im Dorf", "am Meer", "vor dem Essen", "auf dem Hügel",
         "im Winter"),
    ),
    "ru": Grammar(
        "{subj} {verb} {adj} {obj} {place}.",
        ("Фермер", "Моя сестра", "Старый учитель", "Молодой врач", "Наш сосед", "Капитан", "Пекарь",
         "Каждый студент", "Художник", "Рыбак"),
        ("видит", "покупает", "рисует", "несёт", "находит", "чинит", "продаёт", "помнит", "описывает", "строит"),
        ("красный", "тихий", "тяжёлый", "красивый", "сломанный", "новый", "древний", "светлый", "холодный",
         "деревянный"),
        ("дом", "мост", "стол", "сад", "корабль", "забор", "город", "камень", "ключ", "телефон"),
        ("утром", "около рынка", "после дождя", "в деревне", "у моря", "перед ужином", "на холме", "зимой"),
    ),
    "el": Grammar(
        "{subj} {verb} το {adj} {obj} {place}.",
        ("Ο αγρότης", "Η αδελφή μου", "Ο γέρος δάσκαλος", "Ο νέος γιατρός", "Ο γείτονάς μας", "Ο καπετάνιος",
         "Ο φούρναρης", "Κάθε μαθητής", "Ο ζωγράφος", "Ο ψαράς"),
        ("βλέπει", "αγοράζει", "ζωγραφίζει", "κουβαλάει", "βρίσκει", "επισκευάζει", "πουλάει", "θυμάται",
         "περιγράφει", "χτίζει"),
        ("κόκκινο", "ήσυχο", "βαρύ", "όμορφο", "σπασμένο", "καινούριο", "αρχαίο", "φωτεινό", "κρύο", "ξύλινο"),
        ("σπίτι", "βιβλίο", "παράθυρο", "τραπέζι", "καράβι", "γράμμα", "τραγούδι", "δέντρο", "ποτάμι", "χωράφι"),
        ("το πρωί", "κοντά στην αγορά", "μετά τη βροχή", "στο χωριό", "δίπλα στη θάλασσα", "πριν από το δείπνο",
         "στον λόφο", "τον χειμώνα"),
    ),
    "ar": Grammar(
        "{subj} {verb} {obj} {adj} {place}.",
        ("المزارع", "أختي", "المعلم العجوز", "الطبيب الشاب", "جارنا", "القبطان", "الخباز", "كل طالب", "الرسام",
         "الصياد"),
        ("يرى", "يشتري", "يرسم", "يحمل", "يجد", "يصلح", "يبيع", "يتذكر", "يصف", "يبني"),
        ("الأحمر", "الهادئ", "الثقيل", "الجميل", "المكسور", "الجديد", "القديم", "الكبير", "البارد", "الخشبي"),
        ("البيت", "القارب", "الكتاب", "الجسر", "الباب", "الحصان", "الطريق", "القلم", "المصباح", "الكرسي"),
        ("في الصباح", "قرب السوق", "بعد المطر", "في القرية", "عند البحر", "قبل العشاء", "على التل", "في الشتاء"),
    ),
    "zh": Grammar(
        "{subj}{place}{verb}{adj}{obj}。",
        ("农民", "我的姐姐", "老师", "年轻的医生", "我们的邻居", "船长", "面包师", "每个学生", "画家", "渔夫"),
        ("看见了", "买了", "画了", "拿着", "找到了", "修好了", "卖了", "记得", "描述了", "建造了"),
        ("红色的", "安静的", "很重的", "漂亮的", "坏了的", "新的", "古老的", "明亮的", "冰冷的", "木头的"),
        ("房子", "小船", "信", "花园", "桥", "窗户", "书", "河", "桌子", "歌"),
        ("早上", "在市场旁边", "下雨以后", "在村子里", "在海边", "晚饭前", "在山上", "冬天"),
        joiner="",
    ),
    "hi": Grammar(
        "{subj} {place} {adj} {obj} {verb}।",
        ("किसान", "मेरी बहन", "बूढ़ा शिक्षक", "युवा डॉक्टर", "हमारा पड़ोसी", "कप्तान", "बेकर", "हर छात्र",
         "चित्रकार", "मछुआरा"),
        ("देखता है", "खरीदता है", "बनाता है", "उठाता है", "ढूँढता है", "ठीक करता है", "बेचता है", "याद करता है",
         "बताता है", "सजाता है"),
        ("लाल", "शांत", "भारी", "सुंदर", "टूटा हुआ", "नया", "पुराना", "चमकीला", "ठंडा", "लकड़ी का"),
        ("घर", "नाव", "किताब", "बगीचा", "पुल", "खिड़की", "पत्र", "नदी", "मेज़", "गीत"),
        ("सुबह", "बाज़ार के पास", "बारिश के बाद", "गाँव में", "समुद्र के किनारे", "रात के खाने से पहले",
         "पहाड़ी पर", "सर्दियों में"),
    ),
    "fi": Grammar(
        "{subj} {verb} {adj} {obj} {place}.",
        ("Maanviljelijä", "Siskoni", "Vanha opettaja", "Nuori lääkäri", "Naapurimme", "Kapteeni", "Leipuri",
         "Jokainen opiskelija", "Taiteilija", "Kalastaja"),
        ("näkee", "ostaa", "maalaa", "kantaa", "löytää", "korjaa", "myy", "muistaa", "kuvaa", "rakentaa"),
        ("punaisen", "hiljaisen", "raskaan", "kauniin", "rikkinäisen", "uuden", "vanhan", "kirkkaan", "kylmän",
         "puisen"),
        ("talon", "veneen", "kirjan", "sillan", "ikkunan", "pöydän", "laulun", "kirjeen", "puutarhan", "joen"),
        ("aamulla", "torin lähellä", "sateen jälkeen", "kylässä", "meren rannalla", "ennen illallista", "mäellä",
         "talvella"),
    ),
}


def documents(lang: str, split: str, target_bytes: int, seed: int = 0, sentences: tuple[int, int] = (2, 8)):
    """Documents of `sentences` (min, max) sentences until about `target_bytes` UTF-8 bytes.

    Each (seed, split, lang) is its own random stream, so eval text never repeats the train stream.
    """
    grammar = GRAMMARS[lang]
    rng = random.Random(f"{seed}/{split}/{lang}")
    produced = 0
    while produced < target_bytes:
        text = grammar.joiner.join(grammar.sentence(rng) for _ in range(rng.randint(*sentences)))
        produced += len(text.encode())
        yield text


def write_sample_corpus(
    out_dir: str | Path,
    train_bytes: int = 150_000,
    eval_bytes: int = 20_000,
    seed: int = 0,
    files_per_language: int = 1,
    languages: tuple[str, ...] = LANGUAGES,
    sentences: tuple[int, int] = (2, 8),
) -> list[Path]:
    """Write `<out_dir>/<split>/<lang>/part-NNN.jsonl` (sizes are per language) and return the paths.

    Also `<out_dir>/heldout.jsonl`: all languages' eval text in one file, for `hierpt eval` and the job specs.
    """
    written = []
    for split, size in (("train", train_bytes), ("eval", eval_bytes)):
        for lang in languages:
            folder = Path(out_dir) / split / lang
            folder.mkdir(parents=True, exist_ok=True)
            paths = [folder / f"part-{i:03d}.jsonl" for i in range(files_per_language)]
            with contextlib.ExitStack() as stack:
                parts = [stack.enter_context(open(p, "w", encoding="utf-8")) for p in paths]
                for n, text in enumerate(documents(lang, split, size, seed, sentences)):
                    record = json.dumps({"text": text, "lang": lang}, ensure_ascii=False)
                    parts[n % files_per_language].write(record + "\n")
            written.extend(paths)
    heldout = Path(out_dir) / "heldout.jsonl"
    heldout.write_bytes(b"".join(p.read_bytes() for p in written if p.parent.parent.name == "eval"))
    return [*written, heldout]


def sample_recipe(out_dir: str | Path, languages: tuple[str, ...] = LANGUAGES, **fields) -> Recipe:
    """A prep recipe over `write_sample_corpus` output: one source per language's train/ directory."""
    sources = [Source(url=str(Path(out_dir) / "train" / lang), lang=lang) for lang in languages]
    return Recipe(sources=sources, **fields)
