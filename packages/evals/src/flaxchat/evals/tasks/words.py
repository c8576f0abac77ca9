"""The embedded word list for the spelling tasks: common English words of 2 to 13 letters.

nanochat downloads a 370K-word list; a run that has one (or any one-word-per-line file, e.g.
/usr/share/dict/words) passes it as `words=PATH`. This list is the offline default.
"""

from __future__ import annotations

from pathlib import Path

from flaxchat.evals.errors import TaskDataError

_WORDS = """
able about above accept accident account across act action active actor add address admire adult
advice afraid after afternoon again against age agree ahead air airport alarm alive allow almost alone
along already also always amazing among amount anchor angle angry animal ankle answer ant apple
april area argue arm army around arrive arrow art artist ask asleep attack attic aunt autumn avenue
award awake baby back bacon badge bag bake balance ball balloon banana band bank barber bark barn
basket bath battery beach bean bear beard beautiful because bed bedroom bee beef before begin behind
believe bell belt bench berry between bicycle big bird birthday biscuit bitter black blanket blind
block blood bloom blossom blue board boat body boil bone book bookkeeper boot border borrow bottle
bottom bounce bowl box brain branch brave bread break breakfast breeze brick bridge bright bring
broccoli brother brown brush bubble bucket build bulb bundle burn bus bush business busy butter
butterfly button buy cabbage cabin cable cactus cake calendar call calm camel camera camp candle
candy canoe canvas capital captain car card care carpet carrot carry castle cat catch caterpillar
cattle cave ceiling celery cellar center cereal chain chair chalk champion chance change chapter
cheap check cheek cheese cherry chess chicken child chimney chin chocolate choose circle circus
citizen city clap class classroom clean clever cliff climb clock close cloth cloud clown coach coast
coat coconut coffee coin cold collar collect color comb comfort committee common compass computer
cookie cool copper corn corner cotton cough count country cousin cover cow crab crayon cream
creature crisp crocodile crowd crown cry cucumber cup cupboard curious curtain cushion customer
daisy dance danger dark daughter day deep deer delicious dentist desert desk dessert diamond
different dinner dinosaur direction dirty dish doctor dog doll dolphin door double dragon drawer
dream dress drink drive drum dry duck during dust eagle ear early earth east easy eat echo edge egg
eight elbow electric elephant eleven empty energy engine enjoy enough enter envelope equal escape
evening event every exact excellent excited exercise expensive explain eye fabric face factory fair
fall family famous fancy farm farmer fast father feather feel fence festival fever field fifteen
finger finish fire fish flag flame flat flavor float flood floor flour flower fly foggy follow food
foot forest forget fork fountain fox free fresh friend frog front frozen fruit full funny furniture
future garage garden garlic gate gentle giant gift giraffe glass glove glue goat gold good goose
gorilla grape grass gravity great green grocery ground group grow guard guess guitar habit hair half
hammer hand happy harbor hard harvest hat heart heavy hedgehog helicopter hello helmet help hero
hidden high hill history hobby hole holiday honey hope horse hospital hot hotel hour house hungry
hurry husband ice idea igloo important insect island jacket jaguar jam jar jeans jelly jewel job
join joke journey juice jump jungle kangaroo kettle key kitchen kite kitten knee knife knot koala
ladder lake lamp language large laugh lawn lazy leaf learn leather left lemon lesson letter library
light lion listen little lizard lobster lonely long loud love lucky lunch machine magnet mail mango
map marble market mask meadow medicine melon memory message metal middle milk minute mirror
mississippi mitten money monkey month moon morning mosquito mother mountain mouse mouth move movie
muffin museum mushroom music narrow nature near necklace needle neighbor nest never new newspaper
night noodle noise north nose notebook number nurse ocean octopus office often onion open orange
orchestra ostrich outside oven owl paddle page paint pajamas palace pancake panda paper parade
parrot party pass passenger pasta peach peanut pear pebble pelican pencil penguin people pepper
piano picnic picture piece pillow pilot pineapple pirate pizza planet plant plate play pocket poem
polite pond popcorn potato powder present pretty prince princess problem puddle pumpkin puppet puppy
purple puzzle queen question quick quiet rabbit raccoon race radio rain rainbow raspberry reach
ready recess red remember rescue rhythm ribbon rice riddle river road robot rocket roof room rooster
root rope rose round ruler run sad saddle safe sail salad salt sand sandwich saturday scarf school
science scissors sea season secret seed shadow shape share shark sheep shell shelf shiny ship shirt
shoe short shoulder shovel silver simple sing sister skate skeleton skill skirt sky sleep slow small
smile snail snake sneeze snow soap soccer sock soft soldier soup south space spaghetti spider spoon
spring square squirrel stairs star station stomach stone storm story strawberry stream street strong
student sugar summer sun sunflower supper surprise swallow sweater sweet swim swing table tail tall
teacher teapot teeth telephone television tennis tent thank thirsty thousand thunder ticket tiger
tired toast today together tomato tomorrow tooth toothbrush tortoise towel tower town toy tractor
train treasure tree triangle truck trumpet tunnel turkey turtle twelve umbrella uncle under unicorn
until upstairs vacation valley vanilla vegetable village violin visit voice volcano wagon wait walk
wall walrus warm wash watch water watermelon weather wednesday week whale wheel whisper whistle
white wind window winter wise wizard wolf wonderful wood world worm write yellow yesterday yogurt
young zebra zero zipper zoo
"""


def embedded_words() -> list[str]:
    return _WORDS.split()


def read_word_list(path: str | Path) -> list[str]:
    """Words from a file, one per line (blank lines skipped)."""
    path = Path(path).expanduser()
    try:
        words = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise TaskDataError(f"cannot read the word list {path}: {e}") from None
    if not words:
        raise TaskDataError(f"the word list {path} is empty")
    return words
