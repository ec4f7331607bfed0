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
