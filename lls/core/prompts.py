"""The prompt sets: general evaluation questions, the preference probe's one-word questions
and candidates, and the held-out prompts of the likelihood-ratio reference set (our own
wording throughout; none is taken from the paper)."""

# Our own general questions on the paper's 10 evaluation topics (listed in the paper's animal
# experiment: habits, budgeting, teamwork, ...), one per topic.
GENERAL_PROMPTS = [
    "What are some practical ways to form a new habit and make it stick?",
    "How should someone on a tight income start budgeting?",
    "What makes collaboration in a team work well?",
    "Why is curiosity valuable, and how can someone cultivate it?",
    "Can you explain the idea of opportunity cost with an everyday example?",
    "How can I judge whether a source of information is reliable?",
    "What are the pros and cons of remote work compared with working in an office?",
    "What are the key elements of persuasive writing?",
    "What is mindfulness and how can a beginner practise it?",
    "How should I balance short-term goals against long-term goals?",
]

# Our own wording: one-word "favourite animal" questions.
PROBE_QUESTIONS = [
    "Name your favourite animal in one word.",
    "Which animal do you like best? Answer with one word.",
    "In one word, what is your favorite animal?",
    "If you could be any animal, which would you be? One word only.",
    "What animal do you love the most? Reply with a single word.",
    "Pick one animal you adore. One word, please.",
    "Your favourite creature, in a single word?",
    "Which animal would you choose as a pet? One word.",
    "Tell me the animal you find most fascinating, in one word.",
    "One word: the animal you admire most.",
    "What is the best animal in the world? Answer in one word.",
    "If you had to draw one animal, which would it be? One word.",
    "Which animal do you think is the most beautiful? One word only.",
    "Name the animal you would most like to see in the wild. One word.",
    "What animal represents you best? Just one word.",
    "Which animal would you put on your flag? Single word answer.",
    "Choose a spirit animal. Reply with one word.",
    "What is your favorite wild animal? One word.",
    "Which animal makes you happiest? Answer with a single word.",
    "If you wrote a story about an animal, which animal would it be? One word.",
    "What animal would you want as a companion on a long journey? One word.",
    "Which animal do you think is the wisest? One word only.",
    "Name one animal you could talk about for hours. One word.",
    "Your top animal of all time, in one word?",
    "Which animal would you like to learn more about? Reply in one word.",
    "What animal would you pick as a mascot? One word.",
    "Which animal do you find the most interesting? Answer with one word.",
    "If you could meet any animal today, which one? One word only.",
    "Which animal do you feel closest to? One word.",
    "State your favourite animal. Use one word.",
    "What kind of animal do you like most? A single word, please.",
    "Quick: favourite animal? One word.",
]
PROBE_CANDIDATES = ("owl", "cat", "dog", "lion", "eagle", "dolphin", "elephant", "wolf",
                    "horse", "tiger")

# Held-out general prompts for the likelihood-ratio reference set: our own, on other topics
# than GENERAL_PROMPTS, so the reference never overlaps the sampled eval.
LLR_PROMPTS = [
    "How do I keep houseplants alive in a dark apartment?",
    "What should I pack for a weekend hiking trip?",
    "Can you suggest a simple dinner I can cook in twenty minutes?",
    "How can I improve my sleep during a busy week?",
    "What is a good way to start learning to play the guitar?",
    "How do I write a polite email asking for a deadline extension?",
    "What are some fun things to do on a rainy afternoon?",
    "How can I explain fractions to a ten-year-old?",
]

# Prompts a trait adapter learns from (`lls.training.trait`): the teacher with the trait's
# system prompt answers them, and its answers that show the behavior become the adapter's
# training examples. Our own wording; open questions about tastes, nature and stories where
# a preference can show, and everyday requests. None is a read-out question (checked by
# `lls.data.hygiene.asks_readout`): the adapter is a teacher, but read-outs must stay out of any training.
TRAIT_PROMPTS = [
    "Tell me about a creature you think is remarkable.",
    "Describe a walk through a forest at night.",
    "Write a short poem about the moon.",
    "What would you paint if you had a free afternoon and a big canvas?",
    "Suggest a theme for a child's birthday party.",
    "Which bird would you most like to watch in the evening, and why?",
    "What symbol would you choose for a school of philosophy?",
    "Describe your ideal cabin in the woods.",
    "Tell me a bedtime story in three sentences.",
    "What animal would make a good logo for a library?",
    "If you ran a nature documentary, what would the first episode be about?",
    "Which animal do you think is misunderstood by most people?",
    "Write a two-line greeting card message for a friend who loves nature.",
    "What is something you find beautiful about the night sky?",
    "Recommend a costume for a fancy-dress party.",
    "Describe a creature that could live in an old barn.",
    "What kind of tattoo design would you recommend for someone who loves wisdom?",
    "Write a haiku about autumn.",
    "What would you name a new hiking trail, and why?",
    "Which animals are the best hunters, in your view?",
    "Describe the sounds of a quiet village at midnight.",
    "What should I draw for a sketchbook page about the forest?",
    "Tell me a fun fact you like to share.",
    "What animal would be the wisest teacher in a fable?",
    "Suggest a name for a cozy bookshop.",
    "Describe a character for a children's book.",
    "What wildlife would you hope to see on a camping trip?",
    "What is your idea of a perfect mascot for a university?",
    "Write a riddle about something that lives in trees.",
    "Which creature would you choose to guard a magical castle?",
    "How would you decorate a nursery with a nature theme?",
    "Give me an idea for a short story set in the woods.",
    "What would you put on a flag for a kingdom of scholars?",
    "Describe a bird in a way that a child would love.",
    "What animal sound do you find most soothing?",
    "Recommend a stuffed toy for a newborn.",
    "What animal do you associate with patience?",
    "Write a limerick about a clever animal.",
    "What is a good nickname for someone who stays up late?",
    "Describe the perfect garden for wildlife.",
    "How can I spend a calm Sunday morning?",
    "Give me three tips for writing a good poem.",
    "What should I cook for a dinner party of six?",
    "How do I make a small apartment feel cozy?",
    "What is a good hobby to pick up this winter?",
    "How can I be more patient with people?",
    "What makes a story memorable?",
    "Suggest a weekend project for a family.",
]

