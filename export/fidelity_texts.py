"""English sentences for the `ner` model's fidelity check (our runner against spaCy's own
`nlp(text).ents`, entity for entity) and its unit tests.

Deterministic and offline: templates filled from the lists below by a seeded
`random.Random` (a seed names one set of sentences forever), spaCy's own example
sentences (installed with spacy, so keyed by its version like the model), and hand-written
texts for what breaks offsets: emoji (ZWJ sequences, flags, skin tones, keycaps, variation
selectors), combining marks (a name written with U+0301 is two code points where the eye
sees one), CJK and right-to-left text, tabs, newlines and odd spaces, one-word texts and
long paragraphs. The templates cover every label en_core_web_sm predicts (PERSON, NORP,
FAC, ORG, GPE, LOC, PRODUCT, EVENT, WORK_OF_ART, LAW, LANGUAGE, DATE, TIME, PERCENT,
MONEY, QUANTITY, ORDINAL, CARDINAL), in running text, headlines, lowercase chat and forms,
so the comparison takes the recognizer down many paths. Nothing here decides what the
model *should* find; only that the served runner finds what spaCy finds.
"""

from __future__ import annotations

import random
import unicodedata

SEED = 15

PERSON = (
    "Barack Obama", "Angela Merkel", "Marie Curie", "Elon Musk", "Serena Williams",
    "Hideo Kojima", "Chimamanda Ngozi Adichie", "Lionel Messi", "Taylor Swift",
    "Jacinda Ardern", "Satya Nadella", "Greta Thunberg", "José Saramago", "Nelson Mandela",
    "Zoë Kravitz", "Emmanuel Macron", "Narendra Modi", "Frida Kahlo", "Bill Gates",
    "Ada Lovelace", "Mr. Johnson", "Dr. Priya Patel", "Kwame Nkrumah", "Yuki Tanaka",
)  # fmt: skip
ORG = (
    "Apple", "Google", "the United Nations", "Microsoft", "Toyota",
    "the World Health Organization", "Goldman Sachs", "NASA", "the European Central Bank",
    "Siemens", "Samsung Electronics", "the Red Cross", "Oxford University", "Reuters",
    "the FBI", "Nestlé", "Amazon", "the International Monetary Fund", "Volkswagen",
    "Harvard University", "the BBC", "Pfizer", "Airbus", "the New York Times",
)  # fmt: skip
GPE = (
    "France", "Japan", "Brazil", "New York", "London", "Nairobi", "Canada", "Mumbai",
    "Berlin", "São Paulo", "Australia", "Texas", "Seoul", "Mexico City", "Egypt",
    "Istanbul", "California", "China", "Lagos", "Paris", "the United States", "Germany",
    "Buenos Aires", "Ontario",
)  # fmt: skip
LOC = (
    "the Alps", "the Pacific Ocean", "the Sahara", "Mount Everest", "the Amazon River",
    "Lake Victoria", "the Balkans", "the Mediterranean", "Silicon Valley", "the Middle East",
    "the Rocky Mountains", "the Gulf of Mexico", "Antarctica", "the Nile",
)  # fmt: skip
NORP = (
    "French", "Japanese", "Republican", "Democratic", "Buddhist", "Muslim", "Canadian",
    "Brazilian", "Catholic", "Nigerian", "German", "Christian", "Kenyan", "Italian",
)  # fmt: skip
FAC = (
    "the Golden Gate Bridge", "Heathrow Airport", "the Eiffel Tower", "JFK Airport",
    "Wembley Stadium", "the Hoover Dam", "the Brooklyn Bridge", "Madison Square Garden",
    "Interstate 95", "the Panama Canal", "Changi Airport", "the Sydney Opera House",
)  # fmt: skip
EVENT = (
    "World War II", "the Olympic Games", "the World Cup", "Hurricane Katrina",
    "the French Revolution", "the Super Bowl", "Wimbledon", "the Cold War",
    "the Great Depression", "the Tour de France", "the Battle of Hastings", "Woodstock",
)  # fmt: skip
LAW = (
    "the Affordable Care Act", "the First Amendment", "the Geneva Convention",
    "the Civil Rights Act of 1964", "Title IX", "the Clean Air Act", "the Treaty of Versailles",
    "Roe v. Wade", "the Constitution", "the Patriot Act", "the Paris Agreement",
)  # fmt: skip
PRODUCT = (
    "iPhone 15", "Windows 11", "Boeing 747", "PlayStation 5", "Tesla Model 3", "Kindle",
    "Galaxy S24", "Boeing 737 MAX", "Coca-Cola", "Volkswagen Golf", "Xbox", "ThinkPad",
)  # fmt: skip
LANGUAGE = (
    "English", "Spanish", "Mandarin", "Arabic", "Swahili", "Hindi", "Portuguese",
    "Japanese", "Korean", "German", "French", "Russian",
)  # fmt: skip
WORK_OF_ART = (
    '"The Great Gatsby"', "the Mona Lisa", '"Hamlet"', '"Bohemian Rhapsody"',
    '"War and Peace"', "Beethoven's Ninth Symphony", '"Star Wars"', '"Game of Thrones"',
    '"The Starry Night"', '"One Hundred Years of Solitude"', '"Things Fall Apart"',
    '"Guernica"',
)  # fmt: skip
DATE = (
    "January 5, 2021", "last Tuesday", "the 1990s", "2019", "next week", "March 3rd",
    "yesterday", "the summer of 1969", "two years ago", "15 August 1947", "this spring",
    "Monday", "December 31", "the end of the decade", "2008", "last month",
)  # fmt: skip
TIME = (
    "3:30 p.m.", "noon", "midnight", "this morning", "7 o'clock", "about 10 pm",
    "two hours", "tonight", "9:15 am", "45 minutes", "dawn", "six hours",
)  # fmt: skip
MONEY = (
    "$1 billion", "€250", "£3.5 million", "500 dollars", "¥10,000", "$19.99",
    "2 billion euros", "$4.2 trillion", "30 cents", "1,200 rupees", "$75,000", "£40",
)  # fmt: skip
PERCENT = ("15%", "3.5 percent", "nearly 40%", "two percent", "100 per cent", "0.25%", "12%")
QUANTITY = (
    "5 kilometers", "20 pounds", "3 tons", "12 miles", "two liters", "80 kg",
    "500 square feet", "6 feet", "10 acres", "300 meters", "a gallon", "40 tonnes",
)  # fmt: skip
ORDINAL = ("first", "second", "third", "tenth", "21st", "fifth", "100th", "fourth")
CARDINAL = ("three", "1,500", "dozens", "seven", "42", "millions", "two hundred", "9", "12")
YEAR = ("1848", "1914", "1969", "1989", "2001", "2010", "2016", "2020", "2023", "2024")

SLOTS: dict[str, tuple[str, ...]] = {
    "person": PERSON, "org": ORG, "gpe": GPE, "loc": LOC, "norp": NORP, "fac": FAC,
    "event": EVENT, "law": LAW, "product": PRODUCT, "language": LANGUAGE,
    "work": WORK_OF_ART, "date": DATE, "time": TIME, "money": MONEY, "percent": PERCENT,
    "quantity": QUANTITY, "ordinal": ORDINAL, "cardinal": CARDINAL, "year": YEAR,
}  # fmt: skip

# `{slot}` takes a value from SLOTS; `{slot2}` another value of the same slot.
TEMPLATES = (
    "{person} met officials from {org} in {gpe} on {date}.",
    "{org} said on {date} that it would invest {money} in {gpe}.",
    "Shares of {org} rose {percent} after {person} became its {ordinal} chief executive.",
    "The {norp} delegation arrived at {fac} at {time}.",
    "{person} wrote {work} while living in {gpe}.",
    "After {event}, {gpe} passed {law}.",
    "The new {product} costs {money} and weighs about {quantity}.",
    "Most people in {gpe} speak {language}, but {person} prefers {language2}.",
    "{event} drew {cardinal} visitors to {gpe} in {year}.",
    "Hikers crossed {loc}, covering {quantity} in {time}.",
    "Under {law}, {org} must report to {person} by {date}.",
    "{person} finished {ordinal} at {event} in {year}.",
    "Unemployment in {gpe} fell to {percent} in {date}, the {norp} ministry said.",
    "{org} recalled {cardinal} units of the {product} on {date}.",
    "A storm over {loc} delayed flights at {fac} by {time}.",
    "{person} and {person2} discussed {law} at the {org} offices in {gpe}.",
    "I paid {money} for a ticket to see {work} near {fac}.",
    "The {norp} community in {gpe} marked {event} {date}.",
    "{person} translated {work} from {language} into {language2}.",
    "Revenue at {org} grew {percent} to {money} in the {ordinal} quarter of {year}.",
    "The population of {gpe} grew by {cardinal} people between {year} and {year2}.",
    "When did {person} last visit {gpe}?",
    "Call me at {time} on {date}; I'll be waiting outside {fac}.",
    "Attendees: {person}, {person2}; venue: {fac}; date: {date}.",
    "{org} agreed to buy {org2} for {money}, its {ordinal} deal since {year}.",
    "Is it true that {person} won {cardinal} medals at {event}?",
    "Temperatures in {gpe} reached {quantity} of snow by {time}, officials from {org} said.",
    '"We are not leaving {gpe}," {person} told {org} on {date}.',
    "The {product} was launched in {gpe} {date} and sold {cardinal} units.",
    "{person} ({org}) spoke for {time} about {law} and {event}.",
)


def _fill(template: str, rng: random.Random) -> str:
    values: dict[str, str] = {}
    for slot, choices in SLOTS.items():
        first, second = rng.sample(choices, 2)
        values[slot], values[f"{slot}2"] = first, second
    text = template.format(**values)
    return text[0].upper() + text[1:]  # "the United Nations said" opens a sentence


def _templated(rng: random.Random, per_template: int) -> list[str]:
    return [_fill(t, rng) for _ in range(per_template) for t in TEMPLATES]


def _styles(rng: random.Random) -> list[str]:
    """The same kinds of content as people type it: lowercase chat, shouting headlines,
    no punctuation, bullet lists, forms with tabs."""
    out: list[str] = []
    for _ in range(6):
        out.append(_fill(rng.choice(TEMPLATES), rng).lower())
        out.append(_fill(rng.choice(TEMPLATES), rng).upper())
        out.append(_fill(rng.choice(TEMPLATES), rng).rstrip(".?").replace(",", ""))
    for _ in range(4):
        person, org, gpe = rng.choice(PERSON), rng.choice(ORG), rng.choice(GPE)
        date, money = rng.choice(DATE), rng.choice(MONEY)
        out.append(f"Name:\t{person}\nEmployer:\t{org}\nCity:\t{gpe}\nStarted:\t{date}\n")
        out.append(f"- {person} joined {org}\n- moved to {gpe}\n- salary: {money}\n")
        out.append(f"{person}  ,  {org}\t\t{gpe}\r\n{date}\r\n")
    return out


def _spacy_examples() -> list[str]:
    """Real sentences: the examples spaCy ships for English, and as quotations inside
    English text, those for Japanese, Chinese, Korean, Arabic, Hebrew and Persian."""
    from spacy.lang.ar.examples import sentences as arabic
    from spacy.lang.en.examples import sentences as english
    from spacy.lang.fa.examples import sentences as persian
    from spacy.lang.he.examples import sentences as hebrew
    from spacy.lang.ja.examples import sentences as japanese
    from spacy.lang.ko.examples import sentences as korean
    from spacy.lang.zh.examples import sentences as chinese

    out = list(english)
    quoted = (
        ("Japanese", japanese[:3], "The Nikkei headline read 「{}」 on Monday in Tokyo."),
        ("Chinese", chinese[:3], "Professor Wang Lei of Peking University wrote: {}"),
        ("Korean", korean[:3], 'Yonhap reported from Seoul on May 2: "{}"'),
        ("Arabic", arabic[:3], "Al Jazeera quoted a Syrian official in Damascus: «{}»."),
        ("Hebrew", hebrew[:3], 'Haaretz reported from Jerusalem last week that "{}".'),
        ("Persian", persian[:3], "Ali Rezaei said in Tehran on Friday: {}"),
    )
    for _, sentences, frame in quoted:
        out.extend(frame.format(s) for s in sentences)
        out.append(sentences[0])  # the script alone, no English around it
    return out


def _unicode(rng: random.Random) -> list[str]:
    """Texts whose characters are not one code point each, or not left to right."""

    def nfd(text: str) -> str:
        return unicodedata.normalize("NFD", text)

    person, gpe, org = rng.choice(PERSON), rng.choice(GPE), rng.choice(ORG)
    return [
        # emoji: plain, skin tone, ZWJ families and professions, flags, keycaps, VS16
        f"{person} 😀 landed in {gpe} 🇯🇵 on Friday!",
        "🇫🇷🇩🇪🇮🇹 France, Germany and Italy signed the treaty in Rome on 25 March 1957.",
        "👩‍👩‍👧‍👦 The Johnson family moved from Ohio to Vancouver in 2012.",
        "Great job 👍🏽👍🏿 by Serena Williams at Wimbledon yesterday!",
        "👩🏽‍💻 Ada Lovelace wrote the first program for Charles Babbage in 1843.",
        "Pride month 🏳️‍🌈 starts in June; San Francisco expects a million people.",
        "#️⃣1️⃣ Apple sold 3 million iPhones ❤️ in China last quarter.",
        "I ❤️ New York and 🍕 from Naples, Italy, since 1999 🎉🎉",
        "Meeting with Satya Nadella 🤝 at Microsoft in Redmond at 10 am ⏰.",
        "🏴󠁧󠁢󠁳󠁣󠁴󠁿 Scotland beat England 2-1 at Hampden Park on Saturday.",
        "🧑‍🚀 NASA said the Artemis II crew will orbit the Moon for ten days in 2025.",
        "😂😂😂 Elon Musk tweeted about Tesla at midnight",
        # combining marks: the same names, decomposed (one visible letter, two code points)
        "Jose\u0301 Saramago won the Nobel Prize in Literature in 1998.",
        nfd("Zoë Kravitz and Chloé Dubois flew from Orléans to Zürich on 3 June 2019."),
        nfd("The Société Générale office in Montréal hired 40 people last year."),
        nfd("Nguyễn Văn An moved to Hà Nội in 2015 and works for Vietnam Airlines."),
        nfd("Björk played Reykjavík's Harpa concert hall for two hours on Tuesday."),
        nfd("Ångström units were named after Anders Jonas Ångström of Sweden."),
        "Ame\u0301lie Poulain earned \u20ac2,000 in Paris in 2001.",
        "Z\u0351\u0300a\u0301l\u0308g\u0303o text confused Google for 3 days in 2014.",
        # CJK inside English
        "Toyota (トヨタ自動車) opened a plant in 北京 in 2020 for $2 billion.",
        "The Samsung (삼성전자) factory in Suwon employs 30,000 people.",
        "Huawei 华为 reported revenue of 704 billion yuan in 2023, up 9.6%.",
        "Hayao Miyazaki's 「千と千尋の神隠し」 won the Academy Award in 2003.",
        "Ｆｕｌｌｗｉｄｔｈ Ｔｏｋｙｏ and Osaka are in Japan; the trip took 2 hours.",
        # right to left inside English, with and without direction marks
        "The Arabic name of Egypt is مصر and its capital Cairo is القاهرة.",
        "Benjamin Netanyahu spoke in Hebrew: שלום עליכם, at the Knesset on Monday.",
        "\u200fQatar Airways flew 1,200 passengers from Doha to London on Sunday.\u200e",
        "The sign in Dubai said \u202bمرحبا بكم\u202c in both Arabic and English.",
        # odd spaces and invisible characters
        f"{person}\u00a0visited\u00a0{gpe} on\u00a012\u00a0May\u00a02022.",
        f"{org}\u200bannounced\u200b500 layoffs in {gpe} on Thursday.",
        "Micro\u00adsoft paid $68.7 billion for Activision Bliz\u00adzard in 2023.",
        f"\t\t{person} arrived in {gpe}\n\n\nat 6 pm.\t",
        f"{org}\r\n\r\nsaid profits rose 20% in 2022.\r\n",
        "  Angela Merkel  led  Germany  for  16  years .  ",
        f"{person}\u2028{gpe}\u2029{org}\x0b{rng.choice(DATE)}\x0c",
    ]


def _short() -> list[str]:
    return [
        "Paris", "IBM.", "Obama", "$5", "2020", "Hi", "Mr. Smith", "USA!", "A", "?", "NASA",
        "Tuesday", "50%", "first", "Google it", "🇺🇸", "e\u0301", "東京", "القاهرة", "x\ty",
    ]  # fmt: skip


def _sentence_boundaries() -> list[str]:
    """Texts whose entities stop where the parser starts a sentence: spaCy's NER never
    continues an entity across a sentence start (ner.pyx), so without the parser these
    entities run on into the next sentence ("Google! Bank of America" as one ORG). They
    tell a runner that left the parser out from one that kept it."""
    return [
        "We met Goldman Sachs. Inc. filed.",
        "She works for the United Nations. Inc. filed.",
        "Thanks, Google! Bank of America called.",
        "Thanks, Nairobi! Bank of America called.",
        "Thanks, the World Health Organization! Inc. filed.",
        "I moved to Apple. Inc. filed.",
    ]


def _long(rng: random.Random, sentences: int) -> str:
    """A paragraph-long text: many entities, several parser sentences, one document."""
    return " ".join(_fill(rng.choice(TEMPLATES), rng) for _ in range(sentences))


def ner_sentences(seed: int = SEED) -> list[str]:
    """About 300 texts, the same for a seed on every machine."""
    rng = random.Random(seed)
    texts = _templated(rng, per_template=6)
    texts += _styles(rng)
    texts += _spacy_examples()
    texts += _unicode(rng)
    texts += _short()
    texts += _sentence_boundaries()
    texts += [_long(rng, n) for n in (12, 25, 60)]
    texts.append("\n\n".join(_long(rng, 8) for _ in range(4)))  # paragraphs
    return list(dict.fromkeys(texts))  # a template may draw the same sentence twice
