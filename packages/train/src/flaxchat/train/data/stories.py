"""The embedded default corpus: a deterministic generator of simple children's stories.

No real story corpus is reachable offline, so flaxchat makes its own: short
TinyStories-like stories with a beginning (who, where), a problem, help and an
ending. Each story is assembled from one of several plots; every sentence is a
template where `{slot}` is filled from the story's cast and setting and
`[a|b|c]` picks one alternative. A grammar pass then fixes a/an and
capitalises sentence starts, so templates can be written in lower case.

This is synthetic text made by the project, not a real data set.
"""

import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import islice

MIN_WORDS = 80
MAX_WORDS = 250
# Bump whenever the text for a given seed changes, so cached corpora are regenerated.
GENERATOR_VERSION = 1


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _list(text: str) -> tuple[str, ...]:
    """Phrases separated by ';' (phrases may hold templates, so '|' is taken)."""
    return tuple(p.strip() for p in text.split(";") if p.strip())


# ---------------------------------------------------------------- characters

GIRL_NAMES = _words(
    "Lily Mia Emma Sara Lucy Anna Ella Zoe Ruby Rose Amy Ivy Nora Maya Chloe Grace Hannah Kate "
    "Molly Daisy Poppy Lila Jenny Clara Sophie Alice Bella Lena Tina Nina Olive Hazel Iris June "
    "Penny Rosie Sally Wendy Fiona Gina Holly Julia Kira Layla Megan Nell Paula Rita Tessa Vera "
    "Willa Abby Cora Dora Elsie Fern Gwen Heidi Jade Lottie"
)
BOY_NAMES = _words(
    "Tom Ben Max Leo Sam Jack Tim Finn Noah Luke Oliver Owen Jake Eli Ryan Adam Alex Charlie "
    "Danny Ethan Felix George Henry Ivan Joe Kevin Liam Mark Nick Oscar Peter Quinn Ricky Simon "
    "Teddy Victor Will Zack Arlo Bobby Caleb Dylan Eddie Frank Gus Hugo Isaac Jonah Kyle Louis "
    "Milo Ned Otis Paul Reed Seth Toby Wade Ollie Rex"
)
PET_NAMES = _words(
    "Pip Spot Whiskers Fluffy Bubbles Coco Buddy Sunny Patch Biscuit Pepper Button Ziggy Nutmeg "
    "Clover Pumpkin Maple Honey Socks Shadow Ginger Muffin Peanut Pebble Snowy Dotty Bramble "
    "Acorn Rusty Misty Fuzzy Tiny Hoppy Puddles Marble Cookie Bean Sprout Thistle Bluebell "
    "Flick Skipper Doodle Noodle Squeak Tumble Wiggles Chester Barnaby Hoot Waddles Sparky"
)
NAMES = frozenset(GIRL_NAMES + BOY_NAMES + PET_NAMES)

# Animal characters: kind and a few looks that suit that animal.
ANIMALS: Mapping[str, tuple[str, ...]] = {
    kind: _list(looks)
    for kind, looks in (
        ("bunny", "long floppy ears; a fluffy white tail; a twitchy pink nose"),
        ("cat", "soft gray fur; long white whiskers; a striped tail"),
        ("dog", "a waggy tail; big brown spots; one floppy ear"),
        ("puppy", "huge paws; a wet black nose; a curly tail"),
        ("kitten", "tiny pink paws; fluffy orange fur; bright green eyes"),
        ("fox", "a bushy red tail; pointy ears; a white tip on {his} tail"),
        ("bear", "thick brown fur; a round belly; big soft paws"),
        ("mouse", "tiny round ears; a long thin tail; shiny black eyes"),
        ("duck", "yellow feathers; an orange bill; webbed feet"),
        ("frog", "smooth green skin; long strong legs; big bulging eyes"),
        ("owl", "soft brown feathers; big round eyes; a tiny hooked beak"),
        ("squirrel", "a fluffy tail; quick little paws; rusty brown fur"),
        ("pig", "a curly tail; a pink snout; muddy hooves"),
        ("lamb", "soft woolly fleece; a tiny black nose; wobbly legs"),
        ("hedgehog", "prickly spines; a pointy nose; tiny feet"),
        ("turtle", "a hard green shell; wrinkly legs; a slow, steady walk"),
        ("elephant", "a long trunk; big flappy ears; thick gray skin"),
        ("lion", "a golden mane; a loud roar; a long tufted tail"),
        ("tiger", "orange fur with black stripes; sharp white teeth; a long tail"),
        ("monkey", "long arms; a curly tail; a cheeky grin"),
        ("giraffe", "a very long neck; brown patches; knobby knees"),
        ("zebra", "black and white stripes; a short mane; quick hooves"),
        ("penguin", "a black and white coat; short flippers; a funny waddle"),
        ("otter", "sleek brown fur; long whiskers; webbed paws"),
        ("raccoon", "a black mask around {his} eyes; a ringed tail; clever hands"),
        ("deer", "big dark eyes; white spots on {his} back; thin legs"),
        ("pony", "a shaggy mane; a swishy tail; shiny hooves"),
        ("goat", "two small horns; a little beard; strong legs for climbing"),
        ("chick", "fluffy yellow feathers; a tiny beak; thin orange legs"),
        ("beaver", "big front teeth; a flat tail; thick brown fur"),
        ("koala", "fuzzy gray ears; a big black nose; sharp little claws"),
        ("panda", "black patches around {his} eyes; a round white face; a big belly"),
        ("kangaroo", "strong back legs; a long tail; a pouch"),
        ("badger", "a white stripe on {his} face; strong claws; short legs"),
        ("seal", "smooth gray skin; long whiskers; flippers"),
        ("dragon", "green scales; little wings; a warm, smoky breath"),
        ("hamster", "puffy cheeks; tiny whiskers; golden fur"),
        ("parrot", "bright red and green feathers; a curved beak; a very loud squawk"),
        ("hippo", "a huge mouth; tiny wiggly ears; short stumpy legs"),
        ("crocodile", "bumpy green skin; a long snout; a powerful tail"),
        ("sloth", "long curved claws; a sleepy smile; shaggy brown fur"),
        ("camel", "two big humps; long eyelashes; knobbly knees"),
        ("moose", "huge flat antlers; a droopy nose; long legs"),
        ("skunk", "a white stripe down {his} back; a fluffy tail; tiny black paws"),
        ("donkey", "long gray ears; a fuzzy mane; a loud hee-haw"),
    )
}
# How an animal helper gets a thing down from up high; people fetch a ladder.
REACHES: Mapping[str, str] = {
    "giraffe": "stretched {h_his} long neck up high and grabbed it",
    "elephant": "reached up with {h_his} long trunk and lifted it down",
    "owl": "flew up and pushed it loose with {h_his} wings",
    "monkey": "climbed up in a flash and tossed it down",
    "squirrel": "ran up the trunk and wiggled it free",
    "kangaroo": "jumped up high and caught it",
    "bear": "stood up tall on {h_his} back legs and pulled it down",
    "dragon": "flapped {h_his} little wings, flew up and carried it down",
}
HUMAN_REACH = _list(
    "got a tall ladder and climbed up to get it; found a long stick and gently poked it loose"
)
HELPER_ANIMALS = _words("owl bear bunny fox dog cat squirrel monkey giraffe elephant deer turtle duck kangaroo dragon")

FAMILY = (("mom", "Mom", "she"), ("dad", "Dad", "he"), ("grandma", "Grandma", "she"), ("grandpa", "Grandpa", "he"))
PRONOUNS = {
    "she": {"he": "she", "him": "her", "his": "her", "himself": "herself", "was": "was", "i": "I", "me": "me", "my": "my", "am": "am"},
    "he": {"he": "he", "him": "him", "his": "his", "himself": "himself", "was": "was", "i": "I", "me": "me", "my": "my", "am": "am"},
    "they": {"he": "they", "him": "them", "his": "their", "himself": "themselves", "was": "were", "i": "we", "me": "us", "my": "our", "am": "are"},
}

TRAITS = _words(
    "kind happy curious brave shy cheerful playful clever gentle silly busy friendly helpful "
    "quiet lively sleepy bouncy cheeky careful daring jolly sweet bright eager thoughtful "
    "merry proud chatty cuddly giggly dreamy honest polite sporty tidy adventurous artistic caring "
    "creative energetic fearless funny generous graceful imaginative lucky patient smart spirited "
    "sunny talkative wise nosy noisy fussy grumpy"
)
HOMES = _list(
    "a little house near the woods; a cozy house by the sea; a small town with a big clock; "
    "a yellow house on a hill; a busy city full of tall buildings; a quiet village; "
    "a blue cottage with a red door; a farmhouse surrounded by fields; a tall apartment building; "
    "a sleepy town beside a river; a house with a big garden; a windy seaside town; "
    "a small cabin in the mountains; a green valley full of flowers; a houseboat on a canal; "
    "a crooked old house with a chimney; a bright flat above a bakery; a lighthouse on a rocky island"
)
ANIMAL_HOMES = _list(
    "a snug burrow under an old oak tree; a hollow log in the forest; a warm nest high in a tree; "
    "a little den beside a stream; a barn at the edge of a farm; a cave behind a waterfall"
)
CHILD_LOOKS = _list(
    "curly red hair; big brown eyes; two missing front teeth; freckles on {his} nose; "
    "a bright yellow raincoat; long black braids; rosy cheeks; a blue cap that {he} wore every day; "
    "muddy knees; round glasses; a gap-toothed grin; a pink backpack; a striped sweater; "
    "a spotty bow in {his} hair; new red sneakers; a wobbly front tooth; a scraped elbow; "
    "dimples in {his} cheeks; a fuzzy green hat with a pompom; shoelaces that were always untied"
)
ACTIVITIES = _list(
    "playing in the sand; jumping in puddles; drawing pictures of animals; singing silly songs; "
    "reading books about the stars; building towers with blocks; picking wild flowers; "
    "chasing butterflies; climbing trees; counting the clouds; dancing in the kitchen; "
    "baking cookies; splashing in the bath; riding {his} bike; playing hide and seek; "
    "looking at bugs with a magnifying glass; collecting shiny stones; watching the trains go by; "
    "feeding the ducks; flying kites; making mud pies; painting with bright colors; "
    "playing the drum; telling jokes; skipping rope; rolling down grassy hills; "
    "looking for frogs by the pond; helping in the garden; planting seeds; playing dress up; "
    "making paper boats; listening to the rain; watching the stars at night; running races; "
    "swinging high on the swings; digging for treasure; blowing bubbles; humming happy tunes; "
    "stacking pebbles; making necklaces out of daisies; pretending to be a pirate; "
    "listening to bedtime stories; playing catch; whistling with a blade of grass; "
    "sliding on the ice in winter; sorting buttons by color; learning new words; "
    "pretending to be a brave knight; solving puzzles; making funny faces in the mirror; "
    "splashing through streams; catching snowflakes on {his} tongue; drawing maps of secret islands; "
    "knitting scarves with grandma; tapping out rhythms on pots and pans; watching caterpillars munch leaves; "
    "making up rhymes; gazing at the moon; racing paper boats in the gutter; juggling oranges"
)
FOODS = _list(
    "strawberry jam sandwiches; warm pancakes with honey; crunchy carrot sticks; juicy red apples; "
    "peanut butter toast; hot vegetable soup; cheese and crackers; blueberry muffins; banana bread; "
    "chocolate pudding; spaghetti with meatballs; rice and beans; crispy fish fingers; sweet corn on the cob; "
    "plum pie; lemon cake; tomato soup; cinnamon rolls; oatmeal with raisins; watermelon slices; "
    "grilled cheese sandwiches; noodles with broccoli; mashed potatoes; cherry yogurt; pumpkin pie; "
    "mango smoothies; boiled eggs with toast; pizza with mushrooms; pears and grapes; peach jelly"
)
COLORS = _words("red blue green yellow orange purple pink white brown gray golden silver striped spotted shiny")
TOYS = _words(
    "ball kite doll robot drum whistle balloon yo-yo teddy_bear spinning_top marble rattle puppet "
    "tambourine scooter boomerang wagon truck trumpet xylophone jump_rope toy_dinosaur rubber_duck "
    "harmonica kaleidoscope snow_globe picture_book magic_wand paint_box ukulele umbrella"
)
DAYS = _list(
    "One sunny morning; One bright day; On a warm summer afternoon; One cool autumn morning; "
    "Early one spring morning; One cloudy afternoon; On a breezy Saturday; One fine day; "
    "One crisp winter morning; Late one afternoon; One chilly evening; On a lazy Sunday; "
    "One golden autumn day; Just after breakfast one day"
)
AGES = _words("four five six seven")


@dataclass(frozen=True)
class Place:
    """Somewhere a story happens: `at` is the preposition for being there."""

    name: str
    at: str
    sights: tuple[str, ...]  # plural noun phrases: "there were {sight}"
    plans: tuple[str, ...]  # base-verb phrases: "wanted to {plan}"
    mood: str  # one sentence of sound, smell or light
    indoor: bool


INDOOR_PLACES = frozenset({"the library", "the bakery", "the museum", "the playroom", "the kitchen"})
PLACES = tuple(
    Place(name, at, _list(sights), _list(plans), mood, name in INDOOR_PLACES)
    for name, at, sights, plans, mood in (
        ("the park", "at", "swings and slides; ducks on the pond; tall oak trees; children flying kites; green benches",
         "play on the swings; feed the ducks; have a picnic",
         "The grass smelled fresh, and a dog was barking happily somewhere."),
        ("the beach", "at", "shells in the sand; crabs running sideways; big blue waves; seagulls in the sky; striped umbrellas",
         "build a sand castle; look for shells; splash in the waves",
         "The air tasted salty, and the waves went swish, swoosh, swish."),
        ("the forest", "in", "tall pine trees; mushrooms under the ferns; squirrels in the branches; mossy rocks; little streams full of pebbles",
         "look for pinecones; listen to the birds; build a fort out of sticks",
         "It was cool and shady, and a woodpecker was tapping on a trunk."),
        ("the garden", "in", "rows of carrots; bright red tomatoes; bees on the flowers; wooden birdhouses; snails on the leaves",
         "water the flowers; pick strawberries; look for ladybugs",
         "The roses smelled sweet, and a robin hopped along the path."),
        ("the farm", "on", "cows in the field; pigs in the mud; fat sheep behind the fence; hens pecking at seeds; goats on the hay bales",
         "feed the goats; collect eggs; ride in the hay cart",
         "A rooster crowed, and the cows went moo in the field."),
        ("the zoo", "at", "lions sleeping in the sun; monkeys swinging from ropes; tall giraffes; penguins diving into the water; huge gray elephants",
         "see the lions; watch the penguins; ride the little zoo train",
         "Somewhere a parrot squawked, and a hippo yawned a giant yawn."),
        ("the lake", "by", "boats with white sails; frogs on lily pads; dragonflies over the water; ducks near the wooden dock; tall reeds",
         "skip stones; go fishing; paddle a little boat",
         "The water sparkled like glass, and frogs croaked in the reeds."),
        ("the playground", "at", "monkey bars; children in the sandbox; seesaws going up and down; bright red slides; ropes for climbing",
         "go down the slide; swing on the monkey bars; play in the sandbox",
         "Children laughed and shouted, and the swings creaked back and forth."),
        ("the meadow", "in", "wild flowers of every color; buzzing bees; grasshoppers hopping everywhere; daisies in the soft grass; fluffy white clouds",
         "pick flowers; chase grasshoppers; lie in the grass and look at the clouds",
         "The warm breeze smelled of clover, and crickets chirped in the grass."),
        ("the market", "at", "baskets of apples; stalls full of bread and cheese; piles of orange pumpkins; buckets of flowers; people selling honey",
         "buy some fresh fruit; taste the honey; pick out a pumpkin",
         "Everyone was busy, and the air smelled of fresh bread and oranges."),
        ("the library", "at", "shelves full of books; cozy reading corners; big picture books; goldfish in a tank; soft cushions on the floor",
         "borrow a new book; listen to story time; read about dinosaurs",
         "It was very quiet, and the only sound was pages turning."),
        ("the river", "by", "smooth round stones; fish jumping out of the water; boats passing under the bridge; willow trees; ducks paddling along",
         "skip stones; float a toy boat; look for fish",
         "The water gurgled over the stones, and the willows swayed gently."),
        ("the hill", "on", "sheep grazing on the grass; windmills turning slowly; kites dancing in the wind; yellow dandelions; old twisted trees",
         "fly a kite; roll down the grass; watch the sunset",
         "The wind whistled, and from the top you could see for miles."),
        ("the fair", "at", "rides with bright lights; painted horses going round and round; stands selling candy floss; balloons of every color; clowns juggling balls",
         "ride the merry-go-round; win a prize; eat candy floss",
         "Music played, bells rang, and the air smelled of popcorn."),
        ("the bakery", "at", "warm loaves of bread; cupcakes with pink icing; trays of warm buns; jars of cookies; bakers in white hats",
         "buy a warm muffin; watch the baker make bread; choose a birthday cake",
         "It smelled of cinnamon and butter, and the oven hummed softly."),
        ("the pond", "by", "lily pads; tadpoles in the shallow water; ducks and their ducklings; cattails swaying in the wind; turtles sunning on a log",
         "catch tadpoles in a jar; feed the ducks; look for frogs",
         "Dragonflies zipped over the water, and a frog went ribbit, ribbit."),
        ("the museum", "at", "giant dinosaur bones; shiny old coins; paintings in golden frames; models of rockets; stuffed birds in glass cases",
         "see the dinosaur bones; look at the paintings; learn about space",
         "The halls were huge and echoey, and footsteps tapped on the marble floor."),
        ("the snowy hill", "on", "children on sleds; snowmen with carrot noses; icicles on the trees; tracks in the snow; skaters on the frozen pond",
         "go sledding; build a snowman; make snow angels",
         "The snow crunched under every step, and the cold made noses pink."),
        ("the orchard", "in", "apple trees in long rows; baskets full of pears; bees buzzing around the blossoms; ladders leaning against the trees; fallen apples in the grass",
         "pick apples; climb an apple tree; help fill the baskets",
         "The branches were heavy with fruit, and wasps buzzed around the fallen apples."),
        ("the playroom", "in", "boxes of toys; tall stacks of blocks; puzzles on the rug; crayons on a little table; dolls in a dollhouse",
         "build a tower; play with the toy kitchen; draw pictures",
         "Sunlight came through the window and made warm squares on the carpet."),
        ("the kitchen", "in", "pots and pans; bowls of fruit; herbs growing on the windowsill; jars of flour and sugar; cookbooks on a shelf",
         "bake a cake; make pancakes; help cook dinner",
         "The kettle whistled, and the clock on the wall went tick, tock."),
        ("the campsite", "at", "tents in a circle; sparks rising from the campfire; tall trees all around; lanterns hanging on hooks; canoes by the lake",
         "roast marshmallows; sleep in a tent; look at the stars",
         "The fire crackled and popped, and an owl hooted in the dark."),
        ("the harbor", "at", "fishing boats; seagulls on the posts; piles of ropes and nets; sailors in yellow coats; waves slapping the wall",
         "watch the boats come in; count the seagulls; visit the lighthouse",
         "Ropes creaked, engines chugged, and everything smelled of fish and sea."),
        ("the jungle", "in", "giant green leaves; parrots with bright feathers; vines hanging from the trees; waterfalls splashing into pools; colorful frogs",
         "look for parrots; swing on the vines; find the waterfall",
         "It was hot and damp, and monkeys chattered high in the treetops."),
    )
)
PLACE_BY_NAME = {p.name: p for p in PLACES}
OUTDOOR_PLACES = tuple(p for p in PLACES if not p.indoor)
OUTDOOR_SPOTS = _list(
    "behind a big rock; under a bush; in the tall grass; under a pile of leaves; behind a tree; "
    "near the path; inside a hollow log; next to a puddle; beside a flower bed; under a wooden bench; "
    "behind a fence; near a muddy ditch"
)
INDOOR_SPOTS = _list(
    "under a table; behind a chair; on a high shelf; under a big box; behind a curtain; "
    "in a basket; under a cushion; next to the door; inside a cupboard"
)

# ------------------------------------------------------------ plot records


def _records(*records: Mapping[str, str]) -> tuple[Mapping[str, str], ...]:
    return tuple(records)


BREAKABLES = _records(
    dict(toy="kite", damage="the paper tore and one of the thin sticks snapped", tool="some tape and a new stick"),
    dict(toy="toy car", damage="one of its wheels came off", tool="a tiny screwdriver"),
    dict(toy="teddy bear", damage="one arm came loose and some stuffing fell out", tool="a needle and thread"),
    dict(toy="rag doll", damage="its dress ripped and one button eye fell off", tool="a needle and thread"),
    dict(toy="toy boat", damage="its little mast snapped in two", tool="some strong glue"),
    dict(toy="robot", damage="its arm fell off and it stopped beeping", tool="a tiny screwdriver and a new battery"),
    dict(toy="music box", damage="the lid cracked and the music stopped", tool="some glue and a tiny key"),
    dict(toy="toy plane", damage="one wing snapped off", tool="some strong glue"),
    dict(toy="wooden horse", damage="one of its legs broke off", tool="some wood glue and a clamp"),
    dict(toy="drum", damage="the top of the drum tore", tool="a new piece of leather and some string"),
    dict(toy="toy train", damage="two of the cars came apart", tool="a small hook and a screwdriver"),
    dict(toy="clay pot", damage="it cracked into three pieces", tool="some strong glue"),
    dict(toy="bike", damage="the chain came off and the wheel would not turn", tool="a wrench and some oil"),
    dict(toy="sand bucket", damage="the handle snapped off", tool="a piece of strong string"),
    dict(toy="paper crown", damage="it got bent and torn", tool="some tape and a little glitter"),
)
FLYERS = _words("kite ball balloon frisbee hat beach_ball glider shuttlecock")
STUCK_SPOTS = _list(
    "high up in a tall tree; on the roof of a little shed; on top of a tall fence; "
    "on a high branch of an old oak tree; on top of a lamp post; in the gutter of a house"
)
FEARS = _records(
    dict(fear="getting a haircut", helpers="family",
         scene="{day}, {name} had to go to the barber, because {his} hair was so long that it hung in {his} eyes. The scissors went snip, snip, snip.",
         calm="\"A haircut does not hurt one bit,\" said {helper}. \"Hair is like grass. It grows back.\"",
         brave="{name} sat very still in the big spinning chair. Snip, snip! Little curls fell on the floor, and it only tickled.",
         after="When {he} looked in the mirror, {he} could see {his} eyes again, and {he} grinned."),
    dict(fear="riding a bike without training wheels", place="the park",
         scene="{day}, {name} went to the park to ride {his} bike. The training wheels were off for the first time, and the bike wobbled from side to side.",
         calm="\"I will hold the back of the seat,\" said {helper}. \"Just keep pedaling and look ahead.\"",
         brave="{name} pedaled and pedaled. When {he} looked back, {helper} was far behind, waving. {he} had been riding all alone!",
         after="{he} rang the bell, ding, ding, and rode all the way around the pond."),
    dict(fear="singing in the school play", helpers="family,friend",
         scene="It was the night of the school play. Behind the curtain, {name} peeked out at the audience. There were so many people!",
         calm="\"Just look at me and sing to me,\" said {helper}. \"Pretend nobody else is there.\"",
         brave="The curtain opened and the spotlight came on. {name} found {helper} in the crowd and sang the whole song without a single mistake.",
         after="At the end, everybody stood up and clapped, and someone even shouted, \"Hooray!\""),
    dict(fear="the dark", helpers="family",
         scene="That night, when the light went out, {his} room was very dark. The shadows on the wall looked like [monsters|big hairy spiders|scary giants].",
         calm="Then {h_he} turned on a little night light shaped like a moon. \"Look,\" {h_he} said. \"The shadows are just your toys and your chair.\"",
         brave="{name} looked again, and {helper} was right. The monster was only a coat on a hook.",
         after="The dark was not so scary after all."),
    dict(fear="the big slide", place="the playground",
         scene="{day}, {name} went to the playground. There was a new slide there. It was very tall and very twisty.",
         calm="\"We can go down together,\" said {helper}. \"I will be right next to you.\"",
         brave="{name} took a deep breath and sat down at the top. Whoosh! Down {he} went, faster and faster, all the way to the bottom.",
         after="\"Again!\" {speaker} shouted, and ran back to the ladder."),
    dict(fear="the deep water", place="the lake",
         scene="{day}, {name} went to the lake with a swim ring. The water looked deep, dark and cold.",
         calm="{helper} held {his} hands and said, \"Kick your feet. I have you, and I will not let go.\"",
         brave="{name} kicked and splashed. Soon {he} {was} floating all by {himself}!",
         after="The water felt cool and lovely, and {he} did not want to get out."),
    dict(fear="thunder", helpers="family",
         scene="One night, a big storm came. Boom! went the thunder. Flash! went the lightning.",
         calm="{helper} wrapped {him} in a warm blanket and said, \"Thunder is just the sky making noise. It cannot hurt you.\" Together they counted the seconds between each flash and boom.",
         brave="The numbers grew bigger and bigger, because the storm was moving far away. Soon the booms sounded soft, like a drum in another room.",
         after="{name} yawned and fell asleep to the sound of gentle rain."),
    dict(fear="the big dog next door",
         scene="{day}, {name} walked past the house next door. A big dog ran to the fence and barked, \"Woof! Woof!\"",
         calm="\"That is Bruno,\" said {helper}. \"He is loud, but he is very friendly. He just wants to say hello.\"",
         brave="{name} held out {his} hand slowly. Bruno sniffed it and licked {his} fingers. It tickled!",
         after="Now {name} and Bruno say hello to each other every single day."),
    dict(fear="going to a new school", helpers="family",
         scene="Tomorrow was the first day at a new school. {name} lay in bed, and {his} tummy felt full of butterflies.",
         calm="{helper} said, \"Everyone feels a little scared on the first day. You will learn new things and make new friends.\"",
         brave="The next morning, {name} walked into the classroom. A girl with a green ribbon smiled and waved, and the teacher showed {him} where to hang {his} coat.",
         after="By lunchtime, {name} had a new friend to sit with."),
    dict(fear="the buzzing bees", place="the garden",
         scene="{day}, {name} went into the garden. Bees were buzzing all around the flowers. Bzzz! Bzzz!",
         calm="\"Bees are busy making honey,\" said {helper}. \"If you stay calm and let them work, they will leave you alone.\"",
         brave="{name} stood very still. A fat bee landed on a flower, drank from it, and flew away without even looking at {him}.",
         after="Soon {name} {was} watching the bees and counting them as they flew from flower to flower."),
    dict(fear="climbing up high", place="the garden",
         scene="{day}, {name} wanted to climb up to the treehouse in the garden, but the ladder was tall, and the ground looked far away.",
         calm="{helper} stood right behind {him}. \"One step at a time,\" {h_he} said. \"Don't look down. Look up.\"",
         brave="Step by step, {name} climbed up. At the top, {he} could see over the roofs of the whole town!",
         after="The treehouse became {his} favorite place to read and dream."),
    dict(fear="the big waves", place="the beach",
         scene="{day}, {name} went to the beach. The waves were big and noisy, and they crashed onto the sand with a roar.",
         calm="\"Let's jump over the little ones first,\" said {helper}, and took {his} hand.",
         brave="One, two, three, jump! The little wave splashed over {his} toes. Then they jumped a bigger one, and a bigger one.",
         after="{name} laughed so much that {he} forgot to be scared."),
    dict(fear="the doctor", helpers="family",
         scene="{day}, {name} had to go to the doctor for a check-up. {he} did not like the cold, shiny tools.",
         calm="\"The doctor helps keep you strong and healthy,\" said {helper}. \"I will hold your hand the whole time.\"",
         brave="The doctor was gentle and funny. She listened to {his} heart and let {him} listen to it too. Thump, thump, thump!",
         after="At the end, the doctor gave {him} a shiny sticker for being brave."),
    dict(fear="the vacuum cleaner", helpers="family", place="the playroom",
         scene="{day}, a loud roar came from the hall. It was the vacuum cleaner, and it was coming closer and closer!",
         calm="{helper} turned it off and showed {him} how it worked. \"It just eats dust and crumbs,\" {h_he} said. \"It does not eat children.\"",
         brave="{name} pushed the button {himself}. The vacuum roared, and {he} giggled as it gobbled up the crumbs.",
         after="Now {name} helps clean the house every Saturday."),
)
CREATURES = _records(
    dict(find="a ladybug that had fallen into a puddle. It was kicking its tiny legs",
         care="{name} held out a leaf, and the ladybug climbed on and clung to it.",
         free="{he} put the leaf on a sunny rose bush, and the ladybug dried its wings in the warm light.",
         thanks="Then it opened its red spotted wings and flew away, as if to say thank you."),
    dict(find="a baby squirrel that had fallen out of its nest. It was squeaking for its mother",
         care="They put it in a soft basket at the bottom of the tree and stepped back to watch quietly.",
         free="Soon the mother squirrel raced down the trunk, picked up the baby gently in her mouth and carried it home.",
         thanks="She flicked her tail at them, as if to say thank you."),
    dict(find="a little bird sitting on the ground. One of its wings was hurt, and it could not fly",
         care="They made a soft bed for the bird in a shoe box with some grass, and gave it water and seeds.",
         free="After a few days, the wing was strong again. The bird flapped, hopped, and flew up into the blue sky.",
         thanks="The bird sang a happy song from the tree, as if to say thank you."),
    dict(find="a baby duck all alone. It was peeping and looking for its mother", place="the pond",
         care="They walked slowly along the water, and the little duck waddled after them.",
         free="At last they found the mother duck near the reeds. The duckling ran to her and hid under her wing.",
         thanks="The mother duck quacked loudly, as if to say thank you."),
    dict(find="a small turtle lying on its back. Its little legs were waving in the air",
         care="{name} gently turned the turtle over, and they cleared a path through the sticks.",
         free="The turtle poked out its head, walked slowly to the water and slid in with a tiny splash.",
         thanks="It looked back once, as if to say thank you."),
    dict(find="a wet puppy shivering under a bush. It wore a blue collar with a name tag",
         care="They dried the puppy with a soft towel and read the tag. It said the puppy was called Biscuit and lived on Cherry Lane.",
         free="They walked Biscuit home. A little boy opened the door and shouted, \"Biscuit! You came back!\"",
         thanks="Biscuit wagged his tail so hard that his whole body wiggled."),
    dict(find="a little fish flapping in a puddle that was drying up in the sun", place="the river",
         care="{name} scooped up the fish with some water in {his} hands, as fast as {he} could.",
         free="{he} let it go in the river. The fish wiggled its tail and swam away.",
         thanks="A moment later, it jumped out of the water, as if to say thank you."),
    dict(find="a butterfly trapped inside, bumping against the window again and again", place="the library",
         care="{name} cupped the butterfly very carefully in {his} hands, so that its wings would not get hurt.",
         free="{helper} opened the window, and the butterfly fluttered out into the sunshine.",
         thanks="It danced around {his} head once before it flew away, as if to say thank you."),
    dict(find="a snail in the middle of the busy path, where people were walking all around it",
         care="{name} picked up the snail carefully by its shell.",
         free="{he} put it down on a big green leaf under the bushes, where it was safe.",
         thanks="The snail slowly poked out its two little eyes, as if to say thank you."),
    dict(find="a hedgehog stuck in a hole under the fence. It could not go forward or back",
         care="{name} and {helper} dug away the soft dirt very gently with their hands.",
         free="With a wiggle and a push, the hedgehog was free. It shook itself and trotted off into the leaves.",
         thanks="It stopped and sniffed the air, as if to say thank you."),
    dict(find="a tiny kitten up on a wall, meowing and shaking, too scared to jump down",
         care="{helper} reached up slowly and lifted the kitten down, while {name} talked to it in a soft voice.",
         free="They gave the kitten a little milk, and then its owner came running down the street to take it home.",
         thanks="The kitten purred and rubbed against {his} legs, as if to say thank you."),
)
WEATHERS = _records(
    dict(bad="dark clouds filled the sky, and big drops of rain began to fall", sound="The rain went pitter-patter, pitter-patter on the window.",
         after="the rain stopped, and a rainbow stretched across the sky", lesson="even a rainy day can be full of fun"),
    dict(bad="a big storm rolled in, with wind and thunder", sound="The wind howled, and the trees outside bent and swayed.",
         after="the storm passed, and the birds began to sing again", lesson="a stormy day can still be a happy day"),
    dict(bad="it began to snow so hard that the roads were closed", sound="Big white flakes swirled past the window.",
         after="the snow stopped, and the whole world was white and sparkly", lesson="plans can change, and the new plan can be just as good"),
    dict(bad="a thick gray fog covered everything, and nobody could see the road", sound="Outside, the houses and trees had all disappeared in the fog.",
         after="the fog lifted, and the sun peeked through the clouds", lesson="a gray day can still be full of fun"),
)
INDOOR_FUN = _records(
    dict(fun="build a blanket fort", detail="They used chairs, pillows and every blanket in the house. Inside the fort, they read stories with a flashlight."),
    dict(fun="bake cookies", detail="They mixed flour, sugar, butter and eggs in a big bowl. Soon the whole house smelled warm and sweet."),
    dict(fun="paint pictures", detail="They painted a sunny beach, a purple castle and a dragon with green spots. The kitchen table was covered in paint."),
    dict(fun="make sock puppets", detail="They glued buttons on old socks for eyes and used yarn for hair. Then they put on a puppet show with funny voices."),
    dict(fun="have an indoor picnic", detail="They spread a blanket on the living room floor and ate sandwiches, grapes and cheese, just like in the park."),
    dict(fun="play a board game", detail="They rolled the dice and moved their pieces around the board. {name} won once, and {helper} won once."),
)
CREATIONS = _records(
    dict(goal="build the biggest sand castle in the world", place="the beach",
         first="{he} piled up the sand, but the castle kept falling down because the sand was too dry.",
         fix="\"Try adding a little water,\" said {helper}. \"Wet sand sticks together.\"",
         success="This time the castle stood tall, with four towers, a wall and a shell on top."),
    dict(goal="build a tower as tall as the ceiling", place="the playroom",
         first="{he} stacked the blocks up high, but the tower wobbled and fell with a crash.",
         fix="\"Put the big blocks at the bottom,\" said {helper}. \"A tower needs strong feet.\"",
         success="The tower grew taller and taller, until {name} had to stand on a chair to put the last block on top."),
    dict(goal="make a paper boat that could sail", place="the river",
         first="{he} folded a boat, but it soaked up the water and sank right away.",
         fix="\"Use the shiny paper, and fold it tight and neat,\" said {helper}.",
         success="The new boat bobbed on the water and sailed away down the stream, like a real ship."),
    dict(goal="bake a birthday cake for {his} {fam}", place="the kitchen",
         first="{he} mixed everything in a bowl, but the cake came out of the oven flat as a pancake.",
         fix="\"I think we forgot the baking powder,\" said {helper}, and laughed. \"That is what makes a cake rise.\"",
         success="The second cake rose high and golden. They covered it with chocolate and put candles on top."),
    dict(goal="make a kite that could really fly", place="the hill",
         first="{he} ran as fast as {he} could, but the kite just spun around and crashed into the grass.",
         fix="\"Your kite needs a tail,\" said {helper}. \"A long tail keeps it steady.\"",
         success="They tied on a long tail of ribbons. Up went the kite, high over the hill, dancing in the wind."),
    dict(goal="build a snowman with a carrot nose", place="the snowy hill",
         first="{he} tried to roll a snowball, but the snow was too powdery and fell apart.",
         fix="\"Wait until the afternoon,\" said {helper}. \"When the sun warms it a little, the snow gets sticky.\"",
         success="In the afternoon, the snowballs rolled big and round. The snowman got a carrot nose, two stone eyes and a red scarf."),
    dict(goal="make a feeder for the birds", place="the garden",
         first="{he} filled a paper cup with seeds, but the wind knocked it over and the seeds spilled everywhere.",
         fix="\"Let's tie it to a branch with string, so the wind can't tip it over,\" said {helper}.",
         success="Soon a robin came, then two sparrows, then a little blue bird. They pecked at the seeds and chirped."),
    dict(goal="grow a sunflower taller than the fence", place="the garden",
         first="{he} planted a seed and waited, but after three days nothing had come up.",
         fix="\"Seeds need water, sun and time,\" said {helper}. \"Be patient, and water it every day.\"",
         success="So {he} watered it every morning. A tiny shoot came up, then leaves, and at the end of the summer the sunflower was taller than the fence."),
    dict(goal="make lemonade to sell", place="the kitchen",
         first="{he} squeezed the lemons and took a sip. It was so sour that {his} face scrunched up.",
         fix="\"Add some sugar and lots of ice,\" said {helper}.",
         success="The lemonade was sweet and cold. Everyone on the street came to buy a cup, and soon the jug was empty."),
    dict(goal="build a fort out of sticks", place="the forest",
         first="{he} stood the sticks up in a circle, but the roof kept falling in.",
         fix="\"Lean the sticks together at the top, like a tent,\" said {helper}.",
         success="The fort stood strong, and they covered it with leaves. It was the perfect secret hideout."),
)
GAMES = _records(
    dict(game="sail a pirate ship", build="turned a big cardboard box into a pirate ship, with a broom for a mast and a bedsheet for a sail",
         voyage="They sailed across the stormy carpet sea, past sharks, whales and a giant purple octopus.",
         trouble="Then a wave of pillows crashed over the deck, and the treasure map blew away!",
         save="{helper} spotted the map under the sofa island. \"Land ho!\" {h_he} shouted.",
         find="X marked the spot. Under a blanket, they found a chest full of shiny buttons and chocolate coins."),
    dict(game="fly a rocket to the moon", build="turned a big cardboard box into a rocket, with paper plates for windows and a flashlight for an engine",
         voyage="Three, two, one, blast off! They zoomed past twinkling stars, a red planet and a comet with a long icy tail.",
         trouble="Then the rocket ran out of fuel, right next to the moon!",
         save="{helper} found some more moon juice in the fridge. It looked a lot like orange juice.",
         find="They landed on the moon and bounced around, collecting moon rocks that looked a lot like socks."),
    dict(game="guard a castle", build="made a castle out of couch cushions, with a paper flag on the tallest tower",
         voyage="{speaker} was a brave knight with a wooden sword, and {helper} was a friendly dragon who guarded the gate.",
         trouble="Then a wicked wizard stole the golden crown!",
         save="The knight and the dragon chased the wizard twice around the kitchen table.",
         find="At last they found the crown in the laundry basket. The wizard was the cat, fast asleep on top of it."),
    dict(game="explore the wild jungle", build="put on explorer hats and took binoculars and a water bottle, ready to explore the jungle at the bottom of the yard",
         voyage="They crawled through the tall grass, past a sleeping tiger that looked a lot like the neighbor's cat.",
         trouble="Then they came to a wide, rushing river. It was really the garden hose, but it looked very wild.",
         save="{helper} found a plank of wood, and they built a bridge across.",
         find="On the other side, they discovered a rare and beautiful beetle with a shiny green back."),
    dict(game="dive in a submarine", build="built a submarine from the laundry basket and two pairs of swimming goggles",
         voyage="They dived deep under the sea, where seahorses, starfish and a sleepy whale drifted past the round window.",
         trouble="Then the submarine got tangled in a forest of seaweed!",
         save="{helper} pulled the special lever, and the submarine wiggled free.",
         find="Down on the sandy floor, they found a sunken ship full of pearls."),
    dict(game="drive a train across the country", build="lined up the kitchen chairs in a row to make a long train",
         voyage="Choo-choo! The train rushed over bridges, through dark tunnels and across snowy mountains.",
         trouble="Then a huge boulder blocked the tracks!",
         save="Together they pushed and pushed until the boulder rolled away. It was really a pillow, but it was very heavy.",
         find="At last the train reached the seaside station, and all the teddy bears got off for ice cream."),
)
GIFTS = _records(
    dict(gift="a painting of the whole family", make="{he} painted everybody, even the cat, with big smiles and bright colors.",
         whoops="But then {he} knocked over the water jar, and blue paint dripped down the picture.",
         fix="\"Let's turn the drips into rain,\" said {helper}, \"and paint a rainbow over everyone.\"",
         reveal="It was the only family picture in the world with its own rainbow."),
    dict(gift="a necklace of beads", make="{he} threaded red, blue and yellow beads onto a long string.",
         whoops="But the string snapped, and the beads rolled all over the floor, under the sofa and behind the plant.",
         fix="{helper} helped {him} find every single bead, and they used a stronger string.",
         reveal="The beads shone like tiny candies in the light."),
    dict(gift="a birthday card with glitter", make="{he} folded a big sheet of paper and wrote the words in {his} neatest letters.",
         whoops="But the glitter jar tipped over, and glitter went everywhere: on the table, on the floor and even on the dog.",
         fix="\"Let's use the extra glitter to make stars on the envelope,\" said {helper}.",
         reveal="When the card opened, it sparkled like the night sky."),
    dict(gift="a bunch of wild flowers", make="{he} picked daisies, buttercups and purple clover and tied them with a ribbon.",
         whoops="But a hungry goat leaned over the fence and munched half of the flowers!",
         fix="{helper} laughed and helped {him} pick some new ones, far away from the goat.",
         reveal="The flowers made the whole kitchen smell like a meadow."),
    dict(gift="a song", make="{he} made up a song with four verses and a catchy chorus.",
         whoops="But when {he} practiced, {he} forgot all the words in the middle.",
         fix="{helper} helped {him} write the words on a card, with little pictures to remember each line.",
         reveal="Everyone clapped along to the chorus, and some people even danced."),
)

LURES = _list(
    "a pretty blue butterfly; a red balloon floating by; a funny little rabbit; a trail of shiny pebbles; "
    "the sound of a music box; a kitten with a bell on its collar"
)
RACE_PLACES = ("the park", "the meadow", "the beach", "the hill", "the playground")
LOST_PLACES = ("the forest", "the fair", "the market", "the zoo", "the meadow", "the orchard", "the jungle")


@dataclass(frozen=True)
class Plot:
    """One kind of story: helpers allowed, where it may happen, and its beats.

    `setting`, `middle` and `ending` are sequences of beats; each beat is a
    tuple of alternative templates, one of which is used.
    """

    helpers: tuple[str, ...]  # "family", "friend" (known peer), "new" (met in the story)
    setting: tuple[tuple[str, ...], ...]
    middle: tuple[tuple[str, ...], ...]
    ending: tuple[tuple[str, ...], ...]
    records: tuple[tuple[Mapping[str, str], ...], ...] = ()  # one record drawn from each pool; its keys become slots
    toys: tuple[str, ...] = ()
    places: tuple[str, ...] = ()  # names of allowed places; empty: any outdoor place


GO_WITH_TOY = (
    ("{day}, {name} went to {place} [with {his} {toy}|to play with {his} {toy}].",
     "{day}, {name} took {his} {toy} to {place}.",
     "{day}, {name} and {his} {toy} went on a little adventure to {place}."),
    ("{at_place}, there were {sight} and {sight2}.",
     "{name} loved the {sight} {at_place}. {mood}",
     "{mood} {at_place}, there were {sight} and {sight2}.",
     "{at_place}, {he} could see {sight} and {sight2}.",
     "There were {sight} and {sight2}, and {name} wanted to see everything."),
)
GO = (
    ("{day}, {name} [went|walked|skipped] to {place}.",
     "{day}, {name} and {his} {fam} went to {place}."),
    GO_WITH_TOY[1],
)
HELPER_ARRIVES = (
    "Just then, {helper_intro} came [by|along|over]. \"What is wrong, {speaker}?\" {h_he} asked.",
    "Then {helper_intro} saw {him} and came over. \"Why are you so sad?\" {h_he} asked [kindly|softly].",
    "Soon {helper_intro} [heard {him}|saw what happened] and came [running|over]. \"Don't worry,\" {h_he} said. \"I will help you.\"",
)
THANKS = (
    "\"Thank you, {h_call}!\" said {speaker}, and gave {helper} a big hug.",
    "{name} [{was}|felt] so [happy|glad|relieved]. \"Thank you so much, {h_call},\" {speaker} said with a big smile.",
)

PLOTS: tuple[Plot, ...] = (
    Plot(  # a lost toy is found
        helpers=("family", "friend"), toys=TOYS, setting=GO_WITH_TOY,
        middle=(
            ("{he} played with {his} {toy} [all morning|for a long time|until {he} {was} tired]. Then {he} put it down to [look at a butterfly|tie {his} shoe|drink some water|watch the clouds|pick a flower]. When {he} turned around, the {toy} was gone!",
             "{he} had so much fun with the {toy}. But when it was time to go home, {he} could not find it anywhere."),
            ("\"Oh no! Where is {my} {toy}?\" {speaker} [cried|said|gasped].",
             "\"{my} {toy} is lost!\" {speaker} cried. {his} eyes filled with tears.",
             "{name} felt [sad|worried|upset]. \"{i} have to find {my} {toy},\" {speaker} [said|whispered]."),
            ("{he} looked {spot} and {spot2}, but it was not there.",
             "{he} searched {spot}. Then {he} searched {spot2}. Still no {toy}."),
            HELPER_ARRIVES,
            ("{name} told {helper} about the lost {toy}. Together they looked {spot3}. There it was! The {toy} had been there [all along|the whole time].",
             "{helper} looked {spot3} and smiled. \"Look what I found!\" {h_he} said, and held up the {toy}."),
        ),
        ending=(
            THANKS,
            ("From that day on, {he} always kept {his} {toy} close.",
             "{name} learned to keep an eye on {his} things, and {he} never lost the {toy} again."),
        ),
    ),
    Plot(  # a broken toy is mended
        helpers=("family", "friend"), records=(BREAKABLES,), setting=GO_WITH_TOY,
        middle=(
            ("{he} played with {his} {toy} for a long time. But then {he} tripped, and the {toy} fell to the ground. [Crack!|Crash!|Snap!] Oh no, {damage}.",
             "{he} threw the {toy} too high, and it landed on a hard stone. [Crack!|Crash!|Bang!] When {he} picked it up, {damage}."),
            ("{name} began to cry. \"{my} {toy} is broken!\" {speaker} [sobbed|said].",
             "\"Oh no!\" said {speaker}. \"{my} [favorite|best] {toy}!\" Then {he} sat down and felt very sad."),
            HELPER_ARRIVES,
            ("\"Let me see,\" said {helper}. {h_he} looked at the {toy} [closely|carefully] and nodded. \"I think we can fix it.\"",
             "{speaker} showed {helper} the broken {toy}. \"Hmm,\" said {helper}. \"This is a job for {tool}.\""),
            ("They went home, and {helper} got {tool}. [Slowly|Carefully], {h_he} fixed the {toy} while {name} watched. When they were done, the {toy} was [as good as new|almost as good as new].",
             "{name} held the pieces still while {helper} used {tool}. It took a long time, but at last the {toy} was fixed."),
        ),
        ending=(
            ("{name} [smiled|jumped for joy|clapped {his} hands]. \"Thank you, {h_call}! You fixed it!\" {speaker} said.",) + THANKS,
            ("{he} learned that many broken things can be fixed with a little help and a lot of patience.",
             "{name} played with the {toy} again, but this time {he} {was} very careful."),
        ),
    ),
    Plot(  # a fear is faced
        helpers=("family", "friend"), records=(FEARS,), setting=(),
        middle=(
            ("{scene}",),
            ("{name} {was} scared. \"{i} {am} scared of {fear},\" {speaker} [whispered|said in a small voice|said quietly].",
             "{name} did not like {fear} at all. {his} knees began to shake, and {he} wanted to run away."),
            ("{helper_intro} [came and sat next to {him}|knelt down beside {him}|saw {his} face and understood].",
             "Then {helper_intro} came to see what was wrong."),
            ("{calm}",),
            ("{brave}",),
        ),
        ending=(
            ("{after}",),
            ("{name} learned that being brave does not mean you are never scared. It means you try anyway.",
             "{he} felt very proud of {himself}. \"{i} did it!\" {speaker} said. \"{i} {was} brave!\"",
             "\"Thank you for helping me, {h_call},\" said {speaker}. \"Now {i} {am} not scared anymore.\""),
        ),
    ),
    Plot(  # learning to share
        helpers=("friend",), toys=TOYS, setting=GO_WITH_TOY,
        middle=(
            ("{at_place}, {helper_intro} ran up to {him}. \"Can I play with your {toy}?\" {h_he} asked.",
             "Soon {helper_intro} came over and looked at the {toy}. \"Wow! Can I have a turn?\" {h_he} asked."),
            ("But {name} held the {toy} tight. \"No! It is mine!\" {speaker} said.",
             "But {name} hid the {toy} behind {his} back. \"No, you can't,\" {speaker} said."),
            ("{helper} looked down at {h_his} shoes and sat alone [on a bench|under a tree]. {h_he} looked very sad.",
             "{helper} walked away slowly. {h_he} did not say anything, but {h_his} eyes were sad."),
            ("{name} played alone for a while, but it was not much fun. {he} had a [funny|heavy|strange] feeling in {his} tummy.",
             "The {toy} did not seem so fun anymore. {name} kept thinking about how {helper} felt."),
            ("{name} walked over to {helper}. \"I am sorry,\" {speaker} said. \"Do you want to play with {my} {toy} together?\"",),
            ("{helper} [smiled a big smile|jumped up|nodded happily]. They took turns with the {toy} [all afternoon|until the sun went down], and they laughed and laughed.",),
        ),
        ending=(
            ("Playing together was much more fun than playing alone.",
             "{name} learned that sharing makes a good day even better."),
            ("From then on, {name} and {helper} were the best of friends.",
             "After that, {name} always asked {helper} to come and play."),
        ),
    ),
    Plot(  # a small animal is helped
        helpers=("family", "friend"), records=(CREATURES,), setting=GO,
        middle=(
            ("{at_place}, {he} [found|saw] {find}.",
             "{at_place}, {he} heard a small, sad sound. It was {find}."),
            ("\"Oh, you poor thing,\" said {speaker}. \"{i} will help you.\"",
             "{name} knelt down. \"Don't be scared,\" {speaker} said softly. \"{i} {am} here to help.\""),
            ("{name} ran to get {helper_intro}.",
             "{name} called {helper_intro}, who came [at once|running]."),
            ("{care}",),
            ("{free}",),
        ),
        ending=(
            ("{thanks}",),
            ("{name} waved goodbye. {he} felt warm and happy inside.",
             "{he} {was} proud that {he} had helped a small friend in need."),
        ),
    ),
    Plot(  # the weather spoils a plan
        helpers=("family",), records=(WEATHERS, INDOOR_FUN),
        setting=(("{name} {was} very excited. Today {he} wanted to go to {place} to {plan}.",
                  "{name} had big plans. {he} wanted to go to {place} and {plan}."),),
        middle=(
            ("But when {he} looked out of the window, {bad}.",
             "But just as {he} put on {his} shoes, {bad}."),
            ("{sound}",),
            ("{name} {was} so [sad|disappointed]. \"Now {i} can't go to {place},\" {speaker} said with a sigh.",
             "{name} pressed {his} nose against the window. \"It is not fair,\" {speaker} said."),
            ("{helper_intro} sat down next to {him}. \"I have an idea,\" {h_he} said. \"Let's {fun}.\"",
             "{helper_intro} gave {him} a hug. \"Why don't we {fun}?\" {h_he} asked."),
            ("{detail}",),
        ),
        ending=(
            ("Later, {after}.",),
            ("{name} learned that {lesson}.",
             "The next day, {name} finally went to {place} to {plan}. But {he} always remembered the fun indoor day too."),
        ),
    ),
    Plot(  # trying again until it works
        helpers=("family", "friend"), records=(CREATIONS,),
        setting=(("[One day|One morning|Early one morning], {name} had a big idea. {he} wanted to {goal}.",
                  "{name} woke up with a plan. Today {he} would {goal}!"),
                 ("So {he} went to {place} to get started.",)),
        middle=(
            ("{he} worked hard. {first}",
             "At first, things did not go well. {first}"),
            ("{name} stamped {his} foot. \"It is no use!\" {speaker} said. \"{i} can't do it!\"",
             "{name} felt like giving up. {he} sat down with a frown."),
            ("Then {helper_intro} came to see. {fix}",
             "{helper_intro} had been watching. {fix}"),
            ("So {name} tried again, slowly and carefully. {success}",
             "{name} tried one more time. {success}"),
        ),
        ending=(
            ("{name} grinned from ear to ear. \"We did it!\" {speaker} cried.",
             "{name} [jumped up and down|clapped {his} hands] and thanked {helper}."),
            ("{he} learned that when something is hard, it helps to keep trying.",
             "{he} learned that the second try is often better than the first."),
        ),
    ),
    Plot(  # making a new friend
        helpers=("new",), setting=GO,
        middle=(
            ("{at_place}, {he} saw {helper_intro} [sitting all alone|standing by {h_himself}]. {h_he} looked a little lonely.",),
            ("{name} wanted to say hello, but {he} felt a bit shy too.",
             "{name} walked over slowly and smiled."),
            ("\"Hello!\" said {speaker}. \"What is your name?\"",),
            ("\"My name is {h_name},\" {helper} said quietly. \"I just moved here.\"",),
            ("\"Do you want to play with {me}?\" asked {speaker}. {helper} smiled and nodded.",),
            ("They decided to {plan} together, and they laughed all afternoon.",
             "Together they went to {plan}, and {helper} was not lonely anymore."),
        ),
        ending=(
            ("By the end of the day, {name} and {helper} were [best friends|good friends].",),
            ("{name} learned that a simple hello can make a new friend.",
             "Every day after that, they met {at_place} to play."),
        ),
    ),
    Plot(  # a toy stuck up high
        helpers=("family", "friend", "new"), toys=FLYERS, setting=GO_WITH_TOY,
        middle=(
            ("{at_place}, {he} threw {his} {toy} high into the air. [Whoosh!|Up, up, up it went!] But the wind caught it, and the {toy} landed {stuck}.",),
            ("{name} jumped and jumped, but {he} could not reach it. {he} even tried standing on a rock, but it was still too high.",
             "{name} tried throwing a stick at it, but the {toy} did not move."),
            ("\"{my} {toy} is stuck!\" {speaker} [cried|said].",),
            ("Then {helper_intro} came along. \"I can help,\" {h_he} said.",
             "Just then, {helper_intro} walked by and saw the {toy}. \"Wait here,\" {h_he} said."),
            ("{helper} {reach}. Plop! Down came the {toy}!",),
        ),
        ending=(
            THANKS,
            ("After that, {name} played with the {toy} far away from the trees.",
             "{name} learned that it is always okay to ask for help."),
        ),
        places=("the park", "the beach", "the hill", "the meadow", "the playground", "the garden"),
    ),
    Plot(  # lost and found again
        helpers=("new",),
        setting=(("{day}, {name} and {his} {fam} went to {place}.", "{day}, {name} went to {place} with {his} {fam}."), GO_WITH_TOY[1]),
        middle=(
            ("{at_place}, {name} saw {lure} and followed it. When {he} looked up, {he} did not know where {he} {was}.",),
            ("Everything looked big and strange. \"Where {am} {i}?\" {speaker} whispered. {he} wanted to cry.",),
            ("Just then, {helper_intro} stopped next to {him}. \"Are you lost?\" {h_he} asked kindly.",),
            ("\"Stay with me,\" said {helper}. \"We will find your {fam}.\" Together they walked back along the path.",),
            ("Soon {name} heard someone calling, \"{speaker}! {speaker}!\" It was {his} {fam}!",),
        ),
        ending=(
            ("{name} ran and gave {his} {fam} a big hug. \"{i} followed {lure}, and {i} got lost,\" {speaker} said.",),
            ("\"Next time, stay close,\" said {his} {fam}. \"And if you get lost, stand still and ask for help.\"",),
            ("They thanked {helper}, and {name} held {his} {fam}'s hand all the way home.",),
        ),
        places=LOST_PLACES,
    ),
    Plot(  # a game of pretend
        helpers=("family", "friend"), records=(GAMES,), places=("the playroom",),
        setting=(("[One rainy afternoon|One quiet afternoon|One Sunday morning], {name} had nothing to do. Then {he} had a wonderful idea: {he} would {game}!",
                  "{name} did not want to take a nap. {he} wanted to {game}!"),),
        middle=(
            ("{helper_intro} wanted to play too. Together they {build}.",
             "{name} asked {helper_intro} to help. Together they {build}."),
            ("{voyage}",),
            ("{trouble}",),
            ("\"What do we do now?\" cried {speaker}.",
             "{name} {was} worried. \"Oh no!\" {speaker} said. \"This is a real emergency!\""),
            ("{save}",),
            ("{find}",),
        ),
        ending=(
            ("When it was time for dinner, they put everything away. \"That was the best adventure ever!\" said {speaker}.",
             "Then {his} tummy rumbled, and the adventure was over for today."),
            ("{name} could not wait to play again tomorrow.",
             "Sometimes the best adventures happen right at home."),
        ),
    ),
    Plot(  # a homemade present
        helpers=("friend",), records=(GIFTS,), places=("the playroom", "the kitchen", "the meadow", "the farm"),
        setting=(("Tomorrow was {his} {fam}'s birthday, and {name} wanted to make {gift}.",
                  "It was almost {his} {fam}'s birthday. {name} had a secret plan: {he} would make {gift}."),),
        middle=(
            ("{make}",),
            ("{whoops}",),
            ("\"Oh no, now it is ruined!\" cried {speaker}.",
             "{name} felt like crying. \"It is all spoiled,\" {speaker} said."),
            ("Just then, {helper_intro} came over to play and saw what happened.",
             "Luckily, {helper_intro} was there to help."),
            ("{fix}",),
        ),
        ending=(
            ("The next day, {name} gave {his} {fam} the present. {reveal}",),
            ("{his} {fam} gave {him} a big hug and said it was the best present ever.",
             "\"You made this for me?\" said {his} {fam}. \"I love it!\""),
            ("{name} learned that a present made with love is the best present of all.",
             "{name} smiled. Even with the little accident, the present was perfect."),
        ),
    ),
    Plot(  # kindness over winning
        helpers=("friend", "new"), places=RACE_PLACES,
        setting=(("{day}, there was a big race {at_place}. {name} had practiced all week, and {he} wanted to win more than anything.",),),
        middle=(
            ("All the runners stood in a line. \"Ready, set, go!\" shouted the teacher, and off they went.",),
            ("{name} ran as fast as {he} could. Soon {he} {was} in front, and the finish line was very close.",),
            ("But then {he} heard a cry. {helper_intro} had tripped over a root and fallen down.",
             "But then {helper_intro} slipped and fell right next to {him}."),
            ("{name} stopped. {he} knelt down and helped {helper} get up. \"Are you okay?\" {speaker} asked.",),
            ("\"My knee hurts,\" said {helper}. So {name} held {h_his} hand, and they walked to the finish line together.",),
        ),
        ending=(
            ("{name} did not win the race. But everybody clapped and cheered the loudest for {name} and {helper}.",),
            ("{name} learned that being kind is better than winning.",
             "\"You are a true friend,\" said {helper}, and {name} felt like a champion anyway."),
        ),
    ),
)

CLOSERS = (
    "That night, {name} went to bed with a big smile.",
    "It was a day {he} would never forget.",
    "It was the best day ever.",
    "And {he} lived happily ever after.",
)

# ----------------------------------------------------------------- grammar

_ALTERNATIVE = re.compile(r"\[([^\[\]]*)\]")
_SLOT = re.compile(r"\{(\w+)\}")
_ARTICLE = re.compile(r"\b([Aa])n? ([A-Za-z][\w-]*)")
# Sentence starts: the text start, after .!? or ." and spaces; each maybe followed by an opening
# quote. After !" and ?" comes a dialogue tag ("he asked"), so no capital there.
_SENTENCE_START = re.compile(r'(^|[.!?] +|\." +)("?)([a-z])')
_CONSONANT_SOUND = ("uni", "use", "usu", "uti", "uk", "eu", "one", "once")
_SILENT_H = ("hour", "honest", "honor")


def _wants_an(word: str) -> bool:
    w = word.lower()
    if w.startswith(_SILENT_H):
        return True
    return w[0] in "aeiou" and not w.startswith(_CONSONANT_SOUND)


def _fix_articles(text: str) -> str:
    def repl(m: re.Match) -> str:
        return f"{m.group(1)}{'n' if _wants_an(m.group(2)) else ''} {m.group(2)}"

    return _ARTICLE.sub(repl, text)


def _capitalise(text: str) -> str:
    return _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2) + m.group(3).upper(), text)


def _render(template: str, slots: Mapping[str, str | tuple[str, ...]], rng: random.Random) -> str:
    """Expand alternatives and slots; slot values may themselves hold templates."""
    text = template
    for _ in range(4):  # slot values nest at most a few levels deep
        while "[" in text:
            text = _ALTERNATIVE.sub(lambda m: rng.choice(m.group(1).split("|")), text)
        if "{" not in text:
            return text
        text = _SLOT.sub(lambda m: _fill(slots[m.group(1)], rng), text)
    raise AssertionError(f"template nests too deeply: {template!r}")


def _fill(value: str | tuple[str, ...], rng: random.Random) -> str:
    return rng.choice(value) if isinstance(value, tuple) else value


# ------------------------------------------------------------------- casting


def _cast_protagonist(rng: random.Random) -> tuple[dict[str, str], tuple[str, ...], tuple[str, ...]]:
    """Slots for the main character(s), their intro templates and detail templates."""
    form = rng.choice(("child", "child", "animal", "pair"))
    if form == "pair":
        first, second = rng.sample(GIRL_NAMES + BOY_NAMES, 2)
        slots = dict(PRONOUNS["they"], name=f"{first} and {second}", speaker=first, home=rng.choice(HOMES))
        intros = (
            "Once upon a time, there were two {trait} friends named {name}.",
            "{name} were best friends who lived in {home}.",
            "In {home}, there lived two good friends, {name}.",
        )
        details = (
            "They loved {activity}.",
            "Every day, they spent hours {activity}.",
            "They did everything together, especially {activity}.",
            "They both liked {food} best of all.",
        )
        return slots, intros, details
    pronoun = rng.choice(("she", "he"))
    if form == "child":
        name = rng.choice(GIRL_NAMES if pronoun == "she" else BOY_NAMES)
        kind = "girl" if pronoun == "she" else "boy"
        home = rng.choice(HOMES)
        looks = "{he} had {child_look} and a [big|bright|happy] smile."
        extra = ("{he} {was} {age} years old, and {he} loved {activity}.",)
    else:
        name, kind = rng.choice(PET_NAMES), rng.choice(tuple(ANIMALS))
        home = rng.choice(HOMES + ANIMAL_HOMES)
        looks = "{he} had " + rng.choice(ANIMALS[kind]) + "."
        extra = ()
    slots = dict(PRONOUNS[pronoun], name=name, speaker=name, kind=kind, home=home)
    intros = (
        "Once upon a time, there was a {trait} little {kind} named {name}.",
        "There once was a {trait} {kind} called {name} who lived in {home}.",
        "{name} was a {trait} little {kind} who lived in {home}.",
        "In {home}, there lived a {trait} {kind} named {name}.",
    )
    details = (
        "{he} loved {activity}.",
        "More than anything, {he} loved {activity}.",
        "Every day, {he} spent hours {activity}.",
        "{his} favorite thing in the whole world was {activity}.",
        "{his} favorite color was {color}.",
        "{his} favorite food in the whole world was {food}.",
        looks,
    ) + extra
    return slots, intros, details


def _cast_helper(kind: str, rng: random.Random, protagonist: Mapping[str, str]) -> dict[str, str]:
    """Slots for the character who helps: a relative, a friend, or someone new."""
    if kind == "family":
        relation, call, pronoun = rng.choice(FAMILY)
        ref = f"{protagonist['his']} {relation}"
        slots = dict(helper=ref, helper_intro=ref, h_call=call, h_name=call, reach=HUMAN_REACH)
    else:
        form = rng.choice(("child", "animal"))
        if form == "child":
            pronoun = rng.choice(("she", "he"))
            pool = GIRL_NAMES if pronoun == "she" else BOY_NAMES
            name = rng.choice(tuple(n for n in pool if n not in protagonist["name"].split()))
            h_kind, reach = ("girl" if pronoun == "she" else "boy"), HUMAN_REACH
        else:
            pronoun = rng.choice(("she", "he"))
            name = rng.choice(tuple(n for n in PET_NAMES if n != protagonist["name"]))
            h_kind = rng.choice(HELPER_ANIMALS)
            reach = REACHES.get(h_kind, HUMAN_REACH[1])
        if kind == "friend":
            intro = f"{protagonist['his']} friend {name}" + (f" the {h_kind}" if form == "animal" else "")
        else:
            intro = "a [kind|friendly|shy|cheerful|gentle] " + f"{h_kind} named {name}"
        slots = dict(helper=name, helper_intro=intro, h_call=name, h_name=name, reach=reach)
    p = PRONOUNS[pronoun]
    return slots | dict(h_he=p["he"], h_him=p["him"], h_his=p["his"], h_himself=p["himself"])


def _cast_family(rng: random.Random) -> dict[str, str]:
    return dict(fam=rng.choice(FAMILY)[0])


def _pick_place(plot: Plot, record: Mapping[str, str], rng: random.Random) -> Place:
    if "place" in record:
        return PLACE_BY_NAME[record["place"]]
    if plot.places:
        return PLACE_BY_NAME[rng.choice(plot.places)]
    return rng.choice(OUTDOOR_PLACES)


def _compose(rng: random.Random) -> str:
    plot = rng.choice(PLOTS)
    record = {k: v for pool in plot.records for k, v in rng.choice(pool).items()}
    protagonist, intros, details = _cast_protagonist(rng)
    helper_kinds = record["helpers"].split(",") if "helpers" in record else plot.helpers
    place = _pick_place(plot, record, rng)
    sight, sight2 = rng.sample(place.sights, 2)
    spots = rng.sample(INDOOR_SPOTS if place.indoor else OUTDOOR_SPOTS, 3)
    toy = record.get("toy") or rng.choice(plot.toys or TOYS).replace("_", " ")
    slots: dict[str, str | tuple[str, ...]] = {
        **protagonist,
        **_cast_helper(rng.choice(helper_kinds), rng, protagonist),
        **_cast_family(rng),
        **{k: v for k, v in record.items() if k not in ("helpers", "place", "toy")},
        "place": place.name, "at_place": f"{place.at} {place.name}", "sight": sight, "sight2": sight2,
        "spot": spots[0], "spot2": spots[1], "spot3": spots[2],
        "plan": rng.choice(place.plans), "toy": f"{rng.choice(COLORS)} {toy}",
        "stuck": rng.choice(STUCK_SPOTS), "lure": rng.choice(LURES),
        "mood": place.mood, "day": rng.choice(DAYS), "trait": rng.choice(TRAITS), "color": rng.choice(COLORS),
        "activity": ACTIVITIES, "food": FOODS, "child_look": CHILD_LOOKS, "age": rng.choice(AGES),
    }
    opening = [rng.choice(intros), *rng.sample(details, rng.randint(1, 2))]
    opening += [rng.choice(beat) for beat in plot.setting]
    middle = [rng.choice(beat) for beat in plot.middle]
    ending = [rng.choice(beat) for beat in plot.ending]
    if rng.random() < 0.5:
        ending.append(rng.choice(CLOSERS))
    # Every template starts a sentence, so each is capitalised on its own.
    paragraphs = (" ".join(_capitalise(_render(t, slots, rng)) for t in part) for part in (opening, middle, ending))
    return _fix_articles("\n\n".join(paragraphs))


# -------------------------------------------------------------------- public


def generate_story(rng: random.Random) -> str:
    """One story of MIN_WORDS..MAX_WORDS words, drawn from `rng`."""
    while True:  # rejection sampling: almost every composed story fits the length window
        story = _compose(rng)
        if MIN_WORDS <= len(story.split()) <= MAX_WORDS:
            return story


def iter_stories(seed: int) -> Iterator[str]:
    """An unlimited, deterministic stream of stories for `seed`."""
    rng = random.Random(seed)
    while True:
        yield generate_story(rng)


def generate_stories(seed: int, count: int) -> list[str]:
    """The first `count` stories of `iter_stories(seed)`."""
    return list(islice(iter_stories(seed), count))
