"""ArithmeticWordProblems: grade-school arithmetic word problems made by flaxchat, in GSM8K's format.

GSM8K itself cannot be downloaded everywhere, so SFT and RL need a stand-in with known answers.
These problems are generated, not GSM8K: about a dozen multi-step templates (shopping, baking,
travel, savings, ...) with seeded names and numbers, chosen so every intermediate value is a
whole number. Solutions are written like GSM8K's ("4*3 = <<4*3=12>>12 cookies", then
"#### 12"), and each <<expr=result>> result is exactly what flaxchat's calculator returns for
expr, so a tool call at sampling time yields the same text the model was trained on.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from flaxchat.evals.tasks.common import check_int
from flaxchat.evals.tasks.gsm8k import WordProblemTask, word_problem
from flaxchat.infer.tools import use_calculator

PEOPLE = (
    ("Maya", "she", "her"), ("Liam", "he", "his"), ("Sofia", "she", "her"), ("Noah", "he", "his"),
    ("Aisha", "she", "her"), ("Mateo", "he", "his"), ("Chen", "he", "his"), ("Priya", "she", "her"),
    ("Omar", "he", "his"), ("Grace", "she", "her"), ("Kenji", "he", "his"), ("Lucia", "she", "her"),
    ("Ravi", "he", "his"), ("Emma", "she", "her"), ("Tariq", "he", "his"), ("Hana", "she", "her"),
)
SNACKS = ("cookies", "muffins", "cupcakes", "pancakes", "rolls", "brownies")
GOODS = ("notebooks", "pencils", "apples", "juice boxes", "stickers", "markers", "oranges", "candles")
PLANTS = ("tomato plants", "sunflowers", "carrots", "bean plants", "tulips")
THINGS = ("bike", "game", "jacket", "lamp", "backpack", "scooter")


class _Step:
    """One calculation: renders as GSM8K's "expr = <<expr=result>>value"."""

    def __init__(self, expr: str):
        result = use_calculator(expr)
        if result is None or result != int(result) or result < 0:
            raise AssertionError(f"template bug: {expr} = {result}")  # templates pick numbers so this never fails
        self.expr, self.result, self.value = expr, result, int(result)

    def __str__(self) -> str:
        return f"{self.expr} = <<{self.expr}={self.result}>>{self.value}"


Problem = tuple[str, list[str], int]  # question, solution lines, answer


def _shopping(rng: random.Random) -> Problem:
    (name, he, _), item = rng.choice(PEOPLE), rng.choice(GOODS)
    n, price = rng.randint(2, 9), rng.randint(2, 12)
    bill = next(b for b in (20, 50, 100, 200) if b > n * price)
    cost = _Step(f"{n}*{price}")
    change = _Step(f"{bill}-{cost.value}")
    question = f"{name} buys {n} {item} for ${price} each and pays with a ${bill} bill. How much change does {he} get?"
    return question, [f"The {item} cost {cost} dollars.", f"{name} gets {change} dollars in change."], change.value


def _baking(rng: random.Random) -> Problem:
    (name, he, _), snack = rng.choice(PEOPLE), rng.choice(SNACKS)
    batches, each = rng.randint(2, 6), rng.randint(6, 12)
    gift, eaten = rng.randint(1, batches * each // 2), rng.randint(1, 3)
    total = _Step(f"{batches}*{each}")
    left = _Step(f"{total.value}-{gift}-{eaten}")
    question = (f"{name} bakes {batches} batches of {snack} with {each} in each batch. {he.capitalize()} gives away "
                f"{gift} and eats {eaten}. How many {snack} are left?")
    return question, [f"{name} bakes {total} {snack}.", f"There are {left} {snack} left."], left.value


def _sharing(rng: random.Random) -> Problem:
    (name, he, _), item = rng.choice(PEOPLE), rng.choice(GOODS)
    friends, each = rng.randint(2, 8), rng.randint(3, 12)
    more = rng.randint(1, friends * each - 1)
    have = friends * each - more
    total = _Step(f"{have}+{more}")
    share = _Step(f"{total.value}/{friends}")
    question = (f"{name} has {have} {item} and buys {more} more. {he.capitalize()} shares them equally among "
                f"{friends} friends. How many {item} does each friend get?")
    return question, [f"{name} has {total} {item}.", f"Each friend gets {share} {item}."], share.value


def _savings(rng: random.Random) -> Problem:
    (name, he, _), thing = rng.choice(PEOPLE), rng.choice(THINGS)
    weekly, weeks = rng.randint(3, 25), rng.randint(3, 12)
    price = rng.randint(weekly, weekly * weeks)
    saved = _Step(f"{weekly}*{weeks}")
    left = _Step(f"{saved.value}-{price}")
    question = (f"{name} saves ${weekly} every week. After {weeks} weeks, {he} buys a {thing} for ${price}. "
                f"How much money does {he} have left?")
    return question, [f"{name} saves {saved} dollars.", f"{he.capitalize()} has {left} dollars left."], left.value


def _reading(rng: random.Random) -> Problem:
    name, _, _ = rng.choice(PEOPLE)
    per_day, days = rng.randint(5, 30), rng.randint(2, 9)
    pages = per_day * days + rng.randint(10, 200)
    read = _Step(f"{per_day}*{days}")
    left = _Step(f"{pages}-{read.value}")
    question = (f"A book has {pages} pages. {name} reads {per_day} pages every day for {days} days. "
                f"How many pages are left to read?")
    return question, [f"{name} reads {read} pages.", f"There are {left} pages left."], left.value


def _garden(rng: random.Random) -> Problem:
    name, _, _ = rng.choice(PEOPLE)
    plant = rng.choice(PLANTS)
    rows, per_row = rng.randint(3, 9), rng.randint(4, 15)
    failed = rng.randint(1, rows * per_row // 3)
    planted = _Step(f"{rows}*{per_row}")
    grew = _Step(f"{planted.value}-{failed}")
    question = (f"{name} plants {rows} rows of {plant} with {per_row} in each row. {failed} of them do not grow. "
                f"How many {plant} grow?")
    return question, [f"{name} plants {planted} {plant}.", f"{grew} of them grow."], grew.value


def _travel(rng: random.Random) -> Problem:
    s1, h1, s2, h2 = rng.randint(30, 70), rng.randint(2, 5), rng.randint(20, 60), rng.randint(1, 4)
    first, second = _Step(f"{s1}*{h1}"), _Step(f"{s2}*{h2}")
    total = _Step(f"{first.value}+{second.value}")
    question = (f"A train travels at {s1} miles per hour for {h1} hours, then at {s2} miles per hour for {h2} hours. "
                f"How many miles does it travel in total?")
    lines = [f"First it travels {first} miles.", f"Then it travels {second} miles.", f"In total it travels {total} miles."]
    return question, lines, total.value


def _tickets(rng: random.Random) -> Problem:
    adult, child = rng.randint(8, 20), rng.randint(3, 7)
    adults, children = rng.randint(1, 4), rng.randint(1, 5)
    a, c = _Step(f"{adults}*{adult}"), _Step(f"{children}*{child}")
    total = _Step(f"{a.value}+{c.value}")
    question = (f"Adult tickets cost ${adult} and child tickets cost ${child}. A family buys {adults} adult tickets "
                f"and {children} child tickets. How much do they pay?")
    lines = [f"Adult tickets cost {a} dollars.", f"Child tickets cost {c} dollars.", f"They pay {total} dollars."]
    return question, lines, total.value


def _fence(rng: random.Random) -> Problem:
    length, width, price = rng.randint(5, 30), rng.randint(3, 20), rng.randint(2, 9)
    perimeter = _Step(f"2*({length}+{width})")
    cost = _Step(f"{perimeter.value}*{price}")
    question = (f"A rectangular garden is {length} meters long and {width} meters wide. Fencing costs ${price} per "
                f"meter. How much does it cost to put a fence around the garden?")
    return question, [f"The perimeter is {perimeter} meters.", f"The fence costs {cost} dollars."], cost.value


def _discount(rng: random.Random) -> Problem:
    thing = rng.choice(THINGS)
    percent = rng.choice((10, 20, 25, 50))
    price = rng.randint(2, 20) * 20
    off = _Step(f"{price}*{percent}/100")
    sale = _Step(f"{price}-{off.value}")
    question = f"A {thing} costs ${price}. It is on sale for {percent}% off. What is the sale price in dollars?"
    return question, [f"The discount is {off} dollars.", f"The sale price is {sale} dollars."], sale.value


def _chores(rng: random.Random) -> Problem:
    (name, he, _), minutes = rng.choice(PEOPLE), rng.choice((10, 12, 15, 20, 30))
    chores = 60 // minutes * rng.randint(1, 4)
    total = _Step(f"{chores}*{minutes}")
    hours = _Step(f"{total.value}/60")
    question = f"{name} spends {minutes} minutes on each of {chores} chores. How many hours does {he} spend on chores?"
    return question, [f"{name} spends {total} minutes.", f"That is {hours} hour{'' if hours.value == 1 else 's'}."], hours.value


def _buses(rng: random.Random) -> Problem:
    buses, per_bus = rng.randint(2, 6), rng.randint(20, 40)
    classes = rng.choice([c for c in range(2, 13) if buses * per_bus % c == 0])
    size = buses * per_bus // classes
    students = _Step(f"{classes}*{size}")
    each = _Step(f"{students.value}/{buses}")
    question = (f"A school has {classes} classes with {size} students each. The students ride {buses} buses with the "
                f"same number of students on each bus. How many students ride each bus?")
    return question, [f"There are {students} students.", f"Each bus carries {each} students."], each.value


def _ages(rng: random.Random) -> Problem:
    (name, _, his) = rng.choice(PEOPLE)
    age, older, times = rng.randint(4, 15), rng.randint(2, 9), rng.randint(3, 5)
    brother = _Step(f"{age}+{older}")
    grandmother = _Step(f"{brother.value}*{times}")
    question = (f"{name} is {age} years old. {his.capitalize()} brother is {older} years older, and {his} grandmother "
                f"is {times} times as old as {his} brother. How old is the grandmother?")
    return question, [f"The brother is {brother} years old.", f"The grandmother is {grandmother} years old."], grandmother.value


def _fruit(rng: random.Random) -> Problem:
    (name, he, _), bag = rng.choice(PEOPLE), rng.randint(3, 8)
    total_bags = rng.randint(3, 12)
    morning = rng.randint(1, bag * total_bags - 1)
    afternoon = bag * total_bags - morning
    total = _Step(f"{morning}+{afternoon}")
    bags = _Step(f"{total.value}/{bag}")
    question = (f"{name} picks {morning} apples in the morning and {afternoon} in the afternoon. {he.capitalize()} "
                f"puts them in bags of {bag}. How many bags does {he} fill?")
    return question, [f"{name} picks {total} apples.", f"{he.capitalize()} fills {bags} bags."], bags.value


TEMPLATES: tuple[Callable[[random.Random], Problem], ...] = (
    _shopping, _baking, _sharing, _savings, _reading, _garden, _travel,
    _tickets, _fence, _discount, _chores, _buses, _ages, _fruit,
)


def make_problem(seed: int, index: int) -> tuple[str, str, int]:
    """(question, GSM8K-format solution, answer) of problem `index` of generator `seed`."""
    rng = random.Random(f"flaxchat-arithmetic:{seed}:{index}")
    question, lines, answer = rng.choice(TEMPLATES)(rng)
    return question, "\n".join(lines) + f"\n#### {answer}", answer


class ArithmeticWordProblems(WordProblemTask):
    """`size` generated problems; different seeds give different problem sets (use one for training, another for eval)."""

    source = "generated by flaxchat (arithmetic word problems in GSM8K format; not GSM8K)"

    def __init__(self, seed: int = 0, size: int = 1000, **slice_args):
        super().__init__(**slice_args)
        self.seed, self.size = check_int("seed", seed), check_int("size", size, 1)

    def num_examples(self) -> int:
        return self.size

    def get_example(self, index: int) -> dict:
        question, solution, _ = make_problem(self.seed, index)
        return word_problem(question, solution)
