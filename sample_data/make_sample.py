"""Write the project's small multilingual sample corpus into sample_data/corpus/.

Every text here was written for this project. A seeded random.Random combines the
hand-written pieces into a few hundred documents, and every file is written
byte-for-byte deterministically (fixed gzip header, fixed record order), so that
re-running this script gives identical files and tests can rely on exact contents.

    python sample_data/make_sample.py [OUTPUT_DIR]   # default: sample_data/corpus
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SEED = 20240611
N_ENGLISH = 300
N_CHINESE = 200
N_CODE = 150
N_WEB = 150

# --------------------------------------------------------------------------- English

EN_TOPICS: dict[str, list[str]] = {
    "tomatoes": [
        "The tomatoes on the south wall ripen a full week before the ones by the shed.",
        "I tie each stem loosely with strips of an old cotton shirt, because twine cuts into the bark.",
        "A tomato plant that gets water at irregular times will split its fruit after the first heavy rain.",
        "Pinching out the side shoots feels cruel in June and sensible in August.",
        "The neighbour swears by crushed eggshells in the planting hole; I have never seen a difference.",
        "Green fruit left on the vine in October can finish ripening in a paper bag next to a banana.",
        "Every year I plant too many seedlings and every year I give the extras to whoever walks past.",
        "The smell of the leaves stays on your hands long after you have washed them.",
        "Blight arrives with warm, wet nights, and by the time you see it the plant is already lost.",
        "A notebook with planting dates is worth more than any advice printed on the seed packet.",
    ],
    "bicycles": [
        "Riding to work takes twenty-two minutes, which is four minutes less than the bus on a good day.",
        "A chain that squeaks is asking for oil, and a chain that is silent may be asking for a wipe.",
        "The hill on Carver Street is short, steep, and always climbed in the wrong gear.",
        "I keep a spare inner tube, two tyre levers and a small pump in a bag under the saddle.",
        "Most punctures happen in the last kilometre, when you are already thinking about coffee.",
        "Lights are cheap compared with the cost of not being seen at a junction in November.",
        "The bike shop owner can diagnose a wobbly wheel just by listening to it spin.",
        "Commuting by bicycle turns weather forecasts from background noise into personal news.",
        "Mudguards look unfashionable until the first ride behind someone who does not have them.",
        "A good lock should cost roughly a tenth of what the bicycle did.",
    ],
    "backups": [
        "A backup that has never been restored is a hope, not a backup.",
        "Keep three copies of anything important, on two kinds of storage, with one copy somewhere else.",
        "The external drive in the drawer stopped spinning sometime last winter and nobody noticed.",
        "Automated backups fail quietly, so the script should report success, not only failure.",
        "Photographs are the files people miss most, and they are rarely the files people back up first.",
        "Versioned backups protect you from the mistake you made yesterday and discovered today.",
        "Encrypting the offsite copy is easy; remembering where you wrote down the passphrase is harder.",
        "Restoring one random file every month is a small ritual that catches large problems.",
        "Cloud storage is somebody else's computer, which is fine as long as it is not the only computer.",
        "The checksum file next to the archive takes seconds to write and saves hours of doubt.",
    ],
    "bread": [
        "Sourdough starter is mostly patience, with a little flour and water added on schedule.",
        "The dough is ready when a floured finger leaves a dent that springs back slowly.",
        "A cold oven stone produces a pale, disappointing crust no matter how good the dough was.",
        "Weighing flour instead of measuring it in cups made my loaves consistent within a week.",
        "Steam in the first fifteen minutes lets the loaf rise before the crust sets.",
        "Salt slows fermentation, so forgetting it gives you a fast, flat and oddly sweet loaf.",
        "Rye flour drinks water greedily and makes a sticky dough that resists kneading.",
        "Cutting into bread straight from the oven is tempting and always a little gummy.",
        "The kitchen smells of toasted grain for hours after baking, which is half the reason to bake.",
        "Stale bread becomes breadcrumbs, croutons, or pudding, and is almost never wasted.",
    ],
    "languages": [
        "Learning a language as an adult means being comfortable sounding like a child for a while.",
        "Ten minutes a day beats two hours on Sunday, because memory likes repetition more than effort.",
        "The first real conversation is always about the weather, and that is perfectly fine.",
        "Flashcards teach words; talking to people teaches which words actually matter.",
        "Every language has a sound that your mouth refuses to make for the first month.",
        "Reading children's books in a new language is humbling and surprisingly enjoyable.",
        "Grammar tables make more sense after you have already heard the forms a hundred times.",
        "Mistakes are evidence that you are trying to say something you could not say last week.",
        "Listening to the radio in the background trains the ear even when you understand little.",
        "A phrasebook is a map; fluency is knowing the streets without looking.",
    ],
    "debugging": [
        "Most bugs live in the code you were most sure about.",
        "Printing the value you think you have is faster than reasoning about the value you should have.",
        "A test that fails only on Tuesdays is usually about time zones, not about Tuesdays.",
        "Reading the error message slowly, all the way to the end, fixes a surprising number of problems.",
        "When the bug disappears after adding a log line, suspect a race rather than luck.",
        "Cutting the failing input in half, again and again, finds the culprit in a handful of steps.",
        "Explaining the problem to a colleague, or to a rubber duck, often answers it before they reply.",
        "Off-by-one errors hide in loops, slices and date ranges, usually all three at once.",
        "The fix should come with a test that failed before it and passes after it.",
        "If two systems disagree, check the clocks, the encodings and the versions before anything else.",
    ],
    "coast": [
        "At low tide the rock pools hold tiny crabs that sidle away from shadows.",
        "The wind off the sea smells of salt, diesel and seaweed drying in the sun.",
        "Gulls follow the fishing boats in a loud, untidy cloud.",
        "The lighthouse was automated years ago, but someone still paints the door every spring.",
        "Sea glass is just broken bottles, softened by a few decades of sand and patience.",
        "Fog rolls in from the water faster than you can walk back along the beach.",
        "The harbour wall is warm in the evening, and people sit on it to eat chips.",
        "Tide tables are printed in the local paper next to the football results.",
        "A storm moves the sand around so much that the beach looks different every winter.",
        "Children build castles below the tide line and are always astonished when the sea takes them.",
    ],
    "radios": [
        "My grandfather's valve radio takes half a minute to warm up before any sound comes out.",
        "Shortwave listening at night brings in stations from countries I have never visited.",
        "The tuning dial is printed with city names that no longer match any broadcaster.",
        "Replacing a dried-out capacitor brought the old set back from a constant hum.",
        "An antenna made of a long wire strung across the garden works better than the expensive one.",
        "Static rises and falls with the weather, and on some evenings the band is almost silent.",
        "The shipping forecast sounds like poetry even if you never go to sea.",
        "Solder fumes, warm dust and old wood give the workbench a smell of its own.",
        "A radio with a dial invites you to wander; a radio with presets invites you to stay.",
        "The repair manual, typed and photocopied, has notes in three different handwritings.",
    ],
}

EN_TITLE_WORDS = ["Notes on", "A few thoughts about", "Small lessons in", "Why I keep thinking about",
                  "On", "Field notes:", "What I learned from"]
EN_TOPIC_NAMES = {
    "tomatoes": "growing tomatoes", "bicycles": "cycling to work", "backups": "keeping backups",
    "bread": "baking bread", "languages": "learning languages", "debugging": "debugging",
    "coast": "the coast", "radios": "old radios",
}
EN_CONNECTORS = ["", "", "", "Still, ", "Of course, ", "In practice, ", "Then again, ", "Honestly, ",
                 "Over time, ", "Last year, "]

EN_DIALOGUE = [
    ("Did you remember to water the seedlings?", "Twice. Once this morning and once because I forgot I had."),
    ("Is the meeting still at three?", "It moved to half past, but nobody updated the calendar."),
    ("Why is the printer blinking orange?", "It wants paper, toner, or attention, and will not say which."),
    ("Do you want the window open?", "Only if the traffic is quieter than the heater."),
    ("Where did you put the spare keys?", "In the blue bowl, under the receipts you said you would sort."),
    ("How long does the bread need?", "Another twenty minutes, or until it sounds hollow when you tap it."),
    ("Can you read this error?", "It says the file is missing, which is honest, if not very helpful."),
    ("Are we walking or cycling?", "Cycling there and walking back, if the hill wins again."),
    ("Did the backup finish?", "It says it did. I restored one file to be sure, and it opened."),
    ("What time is low tide?", "Just after four, so we have time for lunch first."),
    ("Is this radio station in French?", "Portuguese, I think. The music gives it away."),
    ("Should we tell them about the delay?", "Yes, today. Bad news gets heavier the longer you carry it."),
    ("Have you tried turning it off and on again?", "Three times. It is now off, and staying that way."),
    ("Who left the milk out?", "The same person who finished the coffee, probably."),
    ("Are you coming to the lesson tomorrow?", "If I finish my homework, which means probably not."),
    ("What does this button do?", "Nobody knows, and we have agreed not to find out."),
]
EN_NAMES = [("Mara", "Theo"), ("Ines", "Sam"), ("Priya", "Jonah"), ("Olu", "Greta"), ("Kenji", "Ruth"),
            ("Alba", "Dev")]

EN_FAQ = [
    ("What is Lanternfish?", "Lanternfish is an imaginary note-taking app used in this sample corpus. "
     "It stores notes as plain text files in a folder you choose."),
    ("Does Lanternfish work offline?", "Yes. Everything is stored locally; syncing is optional and happens "
     "only when you press the sync button."),
    ("How do I export my notes?", "Open the menu, choose Export, and pick Markdown or plain text. The "
     "export is a zip file with one file per note."),
    ("Why are my tags missing after an import?", "Tags must start with a hash sign and contain no spaces. "
     "Tags such as #to do are read as #to followed by the word do."),
    ("Can I use it on more than one computer?", "Yes, as long as the notes folder is shared, for example "
     "through a synced drive. Avoid editing the same note on two machines at once."),
    ("Is there a dark mode?", "There is. It follows the system setting unless you choose otherwise in "
     "Preferences > Appearance."),
    ("How are conflicts handled?", "When two versions of a note differ, both are kept and the newer one is "
     "renamed with the word conflict and a timestamp."),
    ("What happens to deleted notes?", "They move to a Trash folder and are removed for good after thirty "
     "days, or sooner if you empty the trash."),
    ("Does it support Chinese and other scripts?", "Yes. Notes are UTF-8, so you can mix English, 中文, "
     "Ελληνικά and emoji in the same note."),
    ("Where are settings stored?", "In a small settings.json file next to the notes folder. You can edit it "
     "by hand, but keep a copy first."),
    ("How do I report a bug?", "Describe what you did, what you expected and what happened instead. A "
     "screenshot and the version number help a great deal."),
    ("Is my data sent anywhere?", "No. The app makes no network requests unless you turn on syncing."),
]

EN_NOTE_LINES = [
    "buy flour (strong white, 1.5 kg) and rye",
    "call the bike shop about the rear wheel",
    "restore test: pick one file from March and open it",
    "return library books before Friday",
    "ask Ines about the Portuguese radio station",
    "repot the basil; it is root-bound again",
    "check tide times for Saturday",
    "renew the domain name (expires in 12 days)",
    "write down the starter feeding schedule",
    "replace the hallway bulb, warm white",
    "practise verb conjugations for ten minutes",
    "send the invoice for May",
    "look up why the test fails only after midnight UTC",
    "clean the chain and check brake pads",
    "label the spare drives with dates",
    "find the soldering iron tip that fits",
    "book dentist appointment",
    "reply to Jonah about the weekend",
]


def english_doc(rng: random.Random, i: int) -> str:
    """One English document: an essay, a dialogue, an FAQ page or a note list."""
    kind = ("essay", "essay", "dialogue", "faq", "notes")[i % 5]
    if kind == "essay":
        topic = rng.choice(sorted(EN_TOPICS))
        title = f"{rng.choice(EN_TITLE_WORDS)} {EN_TOPIC_NAMES[topic]}"
        sentences = rng.sample(EN_TOPICS[topic], rng.randint(4, 10))
        if rng.random() < 0.3:
            other = rng.choice(sorted(set(EN_TOPICS) - {topic}))
            sentences.append(rng.choice(EN_TOPICS[other]))
        paragraphs = []
        while sentences:
            size = rng.randint(2, 4)
            para, sentences = sentences[:size], sentences[size:]
            first = rng.choice(EN_CONNECTORS)
            para[0] = first + (para[0][0].lower() + para[0][1:] if first else para[0])
            paragraphs.append(" ".join(para))
        return title + "\n\n" + "\n\n".join(paragraphs)
    if kind == "dialogue":
        a, b = rng.choice(EN_NAMES)
        lines = []
        for q, r in rng.sample(EN_DIALOGUE, rng.randint(3, 7)):
            lines += [f"{a}: {q}", f"{b}: {r}"]
            if rng.random() < 0.25:
                a, b = b, a
        return "\n".join(lines)
    if kind == "faq":
        pairs = rng.sample(EN_FAQ, rng.randint(3, 6))
        body = "\n\n".join(f"Q: {q}\nA: {a}" for q, a in pairs)
        return f"Frequently asked questions (part {i // 5 + 1})\n\n{body}"
    day = 1 + i % 28
    items = rng.sample(EN_NOTE_LINES, rng.randint(4, 9))
    marks = ["[ ]", "[x]", "-"]
    return f"To do, {day} June\n" + "\n".join(f"{rng.choice(marks)} {item}" for item in items)


# --------------------------------------------------------------------------- Chinese

ZH_TOPICS: dict[str, list[str]] = {
    "做饭": [
        "周末早上，我喜欢慢慢地煮一锅小米粥，再配一碟咸菜。",
        "炒青菜的关键是火要大，油要热，下锅以后不要翻得太久。",
        "妈妈包饺子的时候从来不用量杯，全凭手感。",
        "第一次自己做红烧肉，糖放多了，颜色很好看，味道却太甜。",
        "厨房的窗台上种着葱和香菜，做汤的时候随手掐一点。",
        "剩下的米饭第二天做成蛋炒饭，比新煮的米饭更好吃。",
        "邻居送来一袋自己种的西红柿，我们做了一大碗西红柿鸡蛋汤。",
        "煮面条时加一点盐，面条不容易粘在一起。",
    ],
    "城市": [
        "早高峰的地铁里，每个人都低着头看手机。",
        "公交车站旁边新开了一家面包店，早上七点就排起了长队。",
        "这座城市的老街道很窄，两边都是几十年前的房子。",
        "下雨天骑共享单车，裤脚总是会被溅湿。",
        "晚上的江边很热闹，有人跑步，有人跳舞，还有人钓鱼。",
        "小区门口的修鞋师傅已经在这里工作了二十多年。",
        "新修的公园里有一条很长的步道，周末人特别多。",
        "城市越来越大，可是从家到公司的路却好像越来越远。",
    ],
    "学习": [
        "学编程的时候，最重要的不是记住语法，而是学会怎么找到问题。",
        "每天背二十个单词，坚持一个月，比考前突击有效得多。",
        "老师说，看不懂的地方先做个记号，读完一遍再回来看。",
        "我把错题抄在一个本子上，考试前只复习这个本子。",
        "和同学一起讨论问题，常常比一个人想半天更快找到答案。",
        "第一次写出能运行的程序时，我盯着屏幕看了很久。",
        "学外语的时候不要怕说错，说错了才知道哪里需要改。",
        "图书馆四楼靠窗的位置最安静，适合写作业。",
    ],
    "天气": [
        "今天早上起了大雾，对面的楼只能看见一个模糊的影子。",
        "天气预报说下午有雷阵雨，可是到了晚上还是晴天。",
        "秋天的风一吹，路边的银杏叶就黄了一大片。",
        "今年冬天特别冷，河面上结了一层薄薄的冰。",
        "梅雨季节，衣服晾了三天还是潮的。",
        "夏天的傍晚，大家搬着小板凳在楼下乘凉聊天。",
        "下了一夜的雪，早上推开门，院子里白茫茫的一片。",
        "春天来了，阳台上的花一朵接一朵地开了。",
    ],
    "读书": [
        "睡觉前读几页书，是我一天中最放松的时候。",
        "有些书第一次读觉得无聊，过几年再读却很有意思。",
        "旧书店里的书常常夹着以前主人留下的书签和纸条。",
        "读完一本书，我会在本子上写几句自己的想法。",
        "朋友推荐的小说我一口气读到了凌晨两点。",
        "电子书很方便，但我还是更喜欢纸书翻页的声音。",
        "读历史书的时候，最有意思的往往是普通人的生活细节。",
        "书架上还有很多买了没读的书，我打算今年读完一半。",
    ],
    "旅行": [
        "坐了十个小时的火车，终于到了那个只在照片里见过的小镇。",
        "山上的空气很清新，早上可以听到各种各样的鸟叫。",
        "在陌生的城市迷路，有时候反而能发现有意思的地方。",
        "我们在海边住了三天，每天早上都去看日出。",
        "旅行回来以后，照片越来越多，整理的时间却越来越少。",
        "当地人热情地给我们指路，还推荐了一家好吃的小饭馆。",
        "背包里只带必需的东西，走起路来轻松很多。",
        "最难忘的不是景点，而是路上遇到的人。",
    ],
    "工作": [
        "每天上班前，我会先把今天要做的事情写在便签上。",
        "开会的时候，大家说了很多，可是最后谁也没有做决定。",
        "程序上线前一定要先备份数据库，这是上次出事以后定下的规矩。",
        "新同事问了很多问题，这让我重新想了一遍以前的做法。",
        "周五下午的效率最低，大家都在等着下班。",
        "遇到解决不了的问题，先休息一下，回来再看往往就明白了。",
        "项目终于按时完成了，团队一起去吃了一顿火锅。",
        "写文档很花时间，但半年以后你会感谢当时的自己。",
    ],
    "运动": [
        "每天晚饭后在小区里走半个小时，睡觉也睡得更香了。",
        "游泳池早上六点开门，来的大多是退休的老人。",
        "第一次跑完五公里，腿酸了整整两天。",
        "篮球场上的孩子们从下午一直打到天黑才回家。",
        "打羽毛球最怕有风，球总是飞不到想去的地方。",
        "爷爷每天早上在公园里打太极拳，已经坚持了十年。",
        "下雨的时候不能出去跑步，就在家里跳绳。",
        "比赛输了，教练说：输了不要紧，要知道为什么输。",
    ],
    "动物": [
        "楼下的流浪猫每天傍晚都会准时出现在台阶上。",
        "我家的狗听到钥匙的声音，就会跑到门口等着。",
        "春天的时候，燕子又回到了屋檐下的旧窝里。",
        "公园的湖里有一群鸭子，小朋友们喜欢给它们喂面包。",
        "邻居养了一只会说“你好”的鹦鹉，每次见到人都要说好几遍。",
        "夏天的晚上，田里的青蛙叫个不停。",
        "小金鱼在鱼缸里游来游去，好像永远不会累。",
        "松鼠抱着松果，一下子就跳到了树顶上。",
    ],
    "电脑": [
        "电脑用了五年，开机越来越慢，清理了一下硬盘才好一点。",
        "手机里的照片太多了，我把它们全部拷到了移动硬盘上。",
        "密码不要在所有的网站上都用同一个。",
        "软件更新以后，很多按钮都换了位置，要重新找。",
        "键盘上的字母已经磨得看不清了，可是打字一点也不受影响。",
        "网络断了半个小时，大家才发现平时有多依赖它。",
        "用拼音输入法打字很快，可是写字的时候常常想不起来怎么写。",
        "把文件名写清楚，比如“2024年6月报告_最终版”，以后找起来方便得多。",
    ],
}

ZH_DIALOGUE = [
    ("你吃饭了吗？", "刚吃完，今天食堂有饺子。"),
    ("明天会下雨吗？", "天气预报说有小雨，记得带伞。"),
    ("这个程序为什么跑不起来？", "你看看是不是少装了一个依赖包。"),
    ("周末一起去爬山吧？", "好啊，早上八点在地铁站见。"),
    ("这本书好看吗？", "前面有点慢，后面越来越精彩。"),
    ("会议改到几点了？", "改到下午三点半，地点不变。"),
    ("你的自行车修好了吗？", "修好了，换了一条新链条。"),
    ("备份做完了吗？", "做完了，我还随便恢复了一个文件试了试。"),
    ("你学中文多久了？", "两年了，可是听力还是不太好。"),
    ("晚上想吃什么？", "下雨天，还是吃火锅吧。"),
]
ZH_QA = [
    ("什么是分词？", "分词就是把一段连续的文字切成一个一个的词或者更小的单位，方便计算机处理。"),
    ("为什么要备份数据？", "硬盘会坏，人也会误删文件。有了备份，出了问题也能恢复。"),
    ("怎样才能坚持每天学习？", "把目标定得小一点，比如每天十五分钟，做完就在日历上打个勾。"),
    ("UTF-8 和 GBK 有什么区别？",
     "UTF-8 可以表示所有的 Unicode 字符，GBK 主要用于简体中文。现在大部分网页都用 UTF-8。"),
    ("做面包一定要用烤箱吗？", "不一定，用平底锅也可以做一些简单的面包，比如烙饼。"),
    ("第一次旅行要准备什么？", "证件、钱、充电器和一双舒服的鞋，其他的东西到了当地也能买。"),
    ("程序报错了怎么办？", "先把错误信息从头到尾读一遍，再搜索关键的那一行。很多问题别人已经遇到过。"),
    ("如何选择一本好书？", "可以先读第一章，如果读完还想知道后面发生了什么，那就值得读下去。"),
]
ZH_TITLES = ["随笔", "小记", "日记", "杂谈", "笔记", "生活记录"]


def chinese_doc(rng: random.Random, i: int) -> str:
    """One Chinese document: a short essay, a dialogue or a Q&A page."""
    kind = ("essay", "essay", "essay", "dialogue", "qa")[i % 5]
    if kind == "essay":
        topic = rng.choice(sorted(ZH_TOPICS))
        sentences = rng.sample(ZH_TOPICS[topic], rng.randint(3, 8))
        cuts = sorted(rng.sample(range(1, len(sentences)), rng.randint(0, min(2, len(sentences) - 1))))
        bounds = zip([0, *cuts], [*cuts, len(sentences)], strict=True)
        paragraphs = ["".join(sentences[start:stop]) for start, stop in bounds]
        if rng.random() < 0.3:
            paragraphs.append(f"（写于2024年{1 + i % 12}月{1 + i % 28}日，共{sum(map(len, paragraphs))}字）")
        return f"{topic}{rng.choice(ZH_TITLES)}\n\n" + "\n\n".join(paragraphs)
    if kind == "dialogue":
        a, b = rng.choice([("小王", "小李"), ("妈妈", "我"), ("老师", "学生"), ("同事甲", "同事乙")])
        return "\n".join(f"{a}：{q}\n{b}：{r}" for q, r in rng.sample(ZH_DIALOGUE, rng.randint(3, 6)))
    pairs = rng.sample(ZH_QA, rng.randint(2, 4))
    return "常见问题\n\n" + "\n\n".join(f"问：{q}\n答：{a}" for q, a in pairs)


# --------------------------------------------------------------------------- code

PY_TEMPLATES = [
    (["count_words", "word_frequencies", "tally_words"], [], '''def {fn}(path: str) -> dict[str, int]:
    """Count how often each word appears in a text file."""
    counts: dict[str, int] = {{}}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            for word in line.lower().split():
                counts[word] = counts.get(word, 0) + 1
    return counts


if __name__ == "__main__":
    import sys

    for word, n in sorted({fn}(sys.argv[1]).items(), key=lambda kv: -kv[1])[:{n}]:
        print(f"{{n:6d}}  {{word}}")
'''),
    ([], ["Attachment", "Photo", "Download", "Archive"], '''from dataclasses import dataclass


@dataclass(frozen=True)
class {cls}:
    """One {noun} with a name and a size in bytes."""

    name: str
    size: int = {n}

    def human_size(self) -> str:
        units = ["B", "KB", "MB", "GB"]
        value = float(self.size)
        for unit in units:
            if value < 1024 or unit == units[-1]:
                return f"{{value:.1f}} {{unit}}"
            value /= 1024
        return "?"
'''),
    ([], [], '''import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description="{desc}")
    parser.add_argument("--{opt}", type=int, default={n}, help="how many {noun}s to keep")
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args()
    for path in args.paths:
        print(path, args.{opt})


if __name__ == "__main__":
    main()
'''),
    (["chunked", "batched", "in_groups"], [], '''def {fn}(items, size={n}):
    """Yield lists of at most `size` items; the last one may be shorter."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# 示例：把 {n} 个{noun}分成一组
print(list({fn}(range(10), 3)))
'''),
    (["fingerprint", "checksum_tree", "hash_folder"], [], '''import hashlib
from pathlib import Path


def {fn}(folder: Path) -> dict[str, str]:
    """Map every file under `folder` to its SHA-256, so a backup can be verified later."""
    digests = {{}}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digests[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests
'''),
    ([], ["LRUCache", "RecentItems", "SmallCache"], '''class {cls}:
    """A tiny least-recently-used cache holding at most {n} {noun}s."""

    def __init__(self, capacity: int = {n}) -> None:
        self.capacity = capacity
        self._data: dict = {{}}

    def get(self, key, default=None):
        if key not in self._data:
            return default
        value = self._data.pop(key)
        self._data[key] = value
        return value

    def put(self, key, value) -> None:
        self._data.pop(key, None)
        self._data[key] = value
        if len(self._data) > self.capacity:
            self._data.pop(next(iter(self._data)))

    def __repr__(self) -> str:
        return f"{cls}({{len(self._data)}}/{{self.capacity}})"
'''),
]

JS_TEMPLATES = [
    (["debounce", "waitForPause", "quietly"], [], '''// Wait until the user stops typing for {n} ms.
function {fn}(callback, wait = {n}) {{
  let timer = null;
  return (...args) => {{
    clearTimeout(timer);
    timer = setTimeout(() => callback(...args), wait);
  }};
}}

const input = document.querySelector("#search");
input.addEventListener("input", {fn}((event) => {{
  console.log(`searching for ${{event.target.value}}`);
}}));
'''),
    (["fetchJson", "getJson", "loadItems"], [], '''async function {fn}(url) {{
  const response = await fetch(url, {{ headers: {{ Accept: "application/json" }} }});
  if (!response.ok) {{
    throw new Error(`request failed: ${{response.status}} ${{response.statusText}}`);
  }}
  return response.json();
}}

{fn}("https://api.example.com/v1/{noun}s?limit={n}")
  .then((data) => console.log(data.items.length, "{noun}s"))
  .catch((err) => console.error(err.message));
'''),
    ([], ["LineItem", "CartEntry", "OrderLine"], '''export class {cls} {{
  constructor(name, quantity = {n}) {{
    this.name = name;
    this.quantity = quantity;
  }}

  total(pricePerUnit) {{
    return Math.round(this.quantity * pricePerUnit * 100) / 100;
  }}

  toString() {{
    return `${{this.name}} x${{this.quantity}}`;
  }}
}}
'''),
    ([], [], '''const {noun}s = [
  {{ name: "alpha", size: {n} }},
  {{ name: "beta", size: {m} }},
  {{ name: "gamma", size: 7 }},
];

const totalSize = {noun}s.reduce((sum, item) => sum + item.size, 0);
const largest = {noun}s.reduce((a, b) => (a.size >= b.size ? a : b));
console.log(`total=${{totalSize}} largest=${{largest.name}}`);
'''),
]

C_TEMPLATES = [
    (["reverse", "reverse_in_place", "str_reverse"], [], '''#include <stdio.h>
#include <string.h>

/* Reverse a string in place and return it. */
static char *{fn}(char *s)
{{
\tsize_t i = 0, j = strlen(s);
\twhile (j > i + 1) {{
\t\tchar tmp = s[i];
\t\ts[i++] = s[--j];
\t\ts[j] = tmp;
\t}}
\treturn s;
}}

int main(void)
{{
\tchar word[{n}] = "{noun}";
\tprintf("%s\\n", {fn}(word));
\treturn 0;
}}
'''),
    (["ring", "rb", "bytes_ring"], ["byte_ring", "uart_ring", "ring_buffer"], '''#include <stdint.h>
#include <stdbool.h>

#define RING_SIZE {n}

struct {cls} {{
\tuint8_t data[RING_SIZE];
\tsize_t head, tail;
}};

/* Push one byte; returns false when the buffer is full. */
bool {fn}_push(struct {cls} *r, uint8_t byte)
{{
\tsize_t next = (r->head + 1) % RING_SIZE;
\tif (next == r->tail)
\t\treturn false;
\tr->data[r->head] = byte;
\tr->head = next;
\treturn true;
}}
'''),
    ([], [], '''#include <stdio.h>

/* Count lines, words and bytes on stdin, like a very small wc. */
int main(void)
{{
\tlong lines = 0, words = 0, bytes = 0;
\tint c, in_word = 0;
\twhile ((c = getchar()) != EOF) {{
\t\tbytes++;
\t\tif (c == '\\n')
\t\t\tlines++;
\t\tif (c == ' ' || c == '\\n' || c == '\\t') {{
\t\t\tin_word = 0;
\t\t}} else if (!in_word) {{
\t\t\tin_word = 1;
\t\t\twords++;
\t\t}}
\t}}
\tprintf("%ld %ld %ld\\n", lines, words, bytes);
\treturn 0;
}}
'''),
]

SH_TEMPLATES = [
    ([], [], '''#!/bin/sh
# Nightly backup of the {noun} folder; keeps the last {n} archives.
set -eu
src="$HOME/{noun}s"
dest="/mnt/backup"
stamp=$(date +%Y-%m-%d)
tar -czf "$dest/{noun}s-$stamp.tar.gz" -C "$src" .
sha256sum "$dest/{noun}s-$stamp.tar.gz" > "$dest/{noun}s-$stamp.sha256"
ls -1t "$dest"/{noun}s-*.tar.gz | tail -n +{n1} | xargs -r rm --
echo "backup done: $stamp"
'''),
    ([], [], '''#!/usr/bin/env bash
# Convert every .wav file in the current folder to .flac, skipping ones already done.
shopt -s nullglob
for f in *.wav; do
  out="${{f%.wav}}.flac"
  if [[ -e "$out" ]]; then
    echo "skip $out"
    continue
  fi
  flac --best --silent -o "$out" "$f" && echo "made $out"
done
'''),
    ([], [], '''# find the {n} largest files under /var/log, then grep them for errors
find /var/log -type f -printf '%s\\t%p\\n' | sort -rn | head -n {n} | cut -f2 |
  while read -r file; do
    printf '%s: %s\\n' "$file" "$(grep -ci 'error' "$file")"
  done
'''),
]

CODE_NOUNS = ["note", "photo", "recipe", "invoice", "track", "record", "item", "file"]
CODE_DESCS = ["Tidy up a folder of notes.", "Print the biggest files.", "Check archive checksums.",
              "List recently changed recipes."]


def code_doc(rng: random.Random, i: int) -> tuple[str, str]:
    """One source file, as (language, text), filled in from a hand-written template."""
    lang, templates = [("python", PY_TEMPLATES), ("python", PY_TEMPLATES), ("javascript", JS_TEMPLATES),
                       ("c", C_TEMPLATES), ("shell", SH_TEMPLATES)][i % 5]
    fn_names, class_names, template = templates[(i // 5) % len(templates)]
    n = rng.choice([3, 5, 8, 10, 16, 32, 64, 100, 128, 256])
    fields = {
        "fn": rng.choice(fn_names or [""]), "cls": rng.choice(class_names or [""]),
        "noun": rng.choice(CODE_NOUNS), "desc": rng.choice(CODE_DESCS),
        "opt": rng.choice(["limit", "keep", "top"]), "n": n, "m": n * 3, "n1": n + 1,
    }
    return lang, template.format(**fields)


# --------------------------------------------------------------------------- web

WEB_BOILERPLATE_TOP = [
    "Skip to main content",
    "Home | Blog | Shop | About | Contact",
    "We use cookies to improve your experience. Accept all | Reject | Settings",
    "Sign in  ·  Register  ·  Help",
]
WEB_BOILERPLATE_BOTTOM = [
    "© 2024 Example Corp. All rights reserved.",
    "Share: Twitter | Facebook | Email | Copy link",
    "Privacy policy · Terms of use · Cookie settings",
    "Subscribe to our newsletter! No spam, unsubscribe anytime.",
]
WEB_URLS = [
    "https://www.example.com/blog/2024/06/bread-at-home?utm_source=newsletter&utm_medium=email",
    "http://example.org/forum/thread.php?id=4821&page=3#post-99120",
    "https://shop.example.net/p/ceramic-mug-350ml?color=blue&ref=home",
    "https://docs.example.dev/guide/getting-started/",
    "https://example.com/search?q=%E4%B8%AD%E6%96%87+tokenizer&lang=zh",
    "ftp://files.example.edu/pub/readme.txt",
    "https://例子.测试/路径/页面?参数=值",
    "mailto:hello@example.com?subject=Hi%20there",
]
WEB_SNIPPETS = [
    '<div class="post"><h2>Five tips for crusty bread</h2><p>Preheat the stone for <b>45&nbsp;minutes</b>. '
    'Use steam. Be patient &amp; don&#39;t open the door!</p></div>',
    '<ul class="nav"><li><a href="/">Home</a></li><li><a href="/blog">Blog</a></li>'
    '<li><a href="/contact">Contact</a></li></ul>',
    '<table><tr><th>Item</th><th>Price</th></tr><tr><td>Mug</td><td>€12,50</td></tr>'
    '<tr><td>Teapot</td><td>€34,00</td></tr></table>',
    '<script>window.dataLayer = window.dataLayer || []; dataLayer.push({"event": "pageview"});</script>',
    '<p>Posted by <span class="user">tidepool_fan</span> · 3 hours ago · 12 comments</p>',
    '<img src="/img/harbour.jpg" alt="The harbour wall at sunset" width="640" height="480">',
    '<!-- TODO: remove before launch --><meta name="description" content="Notes, recipes and radio logs">',
]
WEB_MARKDOWN = [
    "# Release notes 2.4.0\n\n- Fixed: sync no longer stalls on files > 2 GB\n- New: dark mode 🌙\n"
    "- Changed: `settings.json` moved to `~/.config/lanternfish/`\n\nSee [the changelog](https://example.com/changelog).",
    "## How to install\n\n```bash\npip install lanternfish\nlanternfish --version\n```\n\n> **Note:** "
    "Python 3.11 or newer is required.",
    "| metric | before | after |\n|---|---:|---:|\n| p50 latency | 120 ms | 85 ms |\n"
    "| p99 latency | 900 ms | 410 ms |",
    "**TL;DR**: restore one file a month. _Seriously._ ~~Trust~~ verify. 👍",
    "1. Feed the starter\n2. Wait 6–8 h\n3. Mix, rest, fold ×4\n"
    "4. Bake at 250 °C for 20 min, then 220 °C for 25 min",
]
WEB_FORUM = [
    "lol this is exactly what happened to me yesterday 😂😂",
    "Has anyone tried the new firmware?? my radio now only picks up static 📻😩",
    "Great post!!! Bookmarked ⭐⭐⭐⭐⭐",
    "+1, same issue here on Windows 11 / Firefox 126",
    "Thanks for sharing 🙏 works perfectly now",
    "First!!1",
    "This. 💯",
    "I disagree, cups are fine if you level the flour with a knife. Fight me 🥖",
    "Edit: never mind, it was a loose cable 🤦",
    "Can someone translate this? → 「今日はいい天気ですね」",
]
WEB_MIXED = [
    "Привет! Как дела? — Hello, how are you?",
    "مرحبا بالعالم — hello world (Arabic, right-to-left)",
    "Καλημέρα! Good morning in Greek.",
    "안녕하세요, 반갑습니다! Korean greeting.",
    "日本語のテキストもここにあります。Japanese text sits here too.",
    "中文、English 和 emoji 🎉 混在一起的一句话。",
    "Zürich, São Paulo, Kraków, Reykjavík, Besançon",
    "math: ∑ x² ≤ ∞, π ≈ 3.14159, √2 ≈ 1.414, α→β",
    "नमस्ते दुनिया — hello world in Hindi",
    "zero\u200bwidth space and non\u00a0breaking space and a soft\u00adhyphen",
]
WEB_TSV = "name\tqty\tprice\nmug\t2\t12.50\nteapot\t1\t34.00\nspoon\t6\t1.20"


def web_doc(rng: random.Random, i: int) -> tuple[str, str]:
    """One scraped-looking page, as (url, text): boilerplate around a messy body."""
    parts = rng.sample(WEB_BOILERPLATE_TOP, rng.randint(1, 3))
    body_kinds = ["html", "markdown", "forum", "mixed"]
    for kind in rng.sample(body_kinds, rng.randint(1, 3)):
        if kind == "html":
            parts += rng.sample(WEB_SNIPPETS, rng.randint(1, 3))
        elif kind == "markdown":
            parts.append(rng.choice(WEB_MARKDOWN))
        elif kind == "forum":
            parts += rng.sample(WEB_FORUM, rng.randint(2, 5))
        else:
            parts += rng.sample(WEB_MIXED, rng.randint(1, 4))
    if i % 7 == 0:
        parts.append(WEB_TSV)
    if i % 4 == 0:
        parts.append("Links: " + " ".join(rng.sample(WEB_URLS, 3)))
    parts += rng.sample(WEB_BOILERPLATE_BOTTOM, rng.randint(1, 3))
    newline = "\r\n" if i % 3 == 0 else "\n"
    return rng.choice(WEB_URLS), newline.join(parts)


# --------------------------------------------------------------------------- notes (one file each)

NOTES = {
    "meeting-2024-06-03.txt": (
        "Weekly sync, 3 June\n\nPresent: Mara, Theo, Priya (remote)\n\n"
        "1. Backup job: ran every night last week; one restore test passed.\n"
        "2. The flaky test turned out to depend on the local time zone. Fixed by pinning UTC.\n"
        "3. Theo to write down the release checklist before Friday.\n\n"
        "Next meeting: 10 June, same time.\n"
    ),
    "reading-list.txt": (
        "Reading list\n\n"
        "- a book about tides and the moon\n- the repair manual for the old radio (again)\n"
        "- something in Portuguese, short, with pictures\n- 一本关于做饭的书\n"
    ),
    "packing-list-crlf.txt": (
        "Packing list\r\n\r\n"
        "passport\r\ncharger + adapter\r\nrain jacket\r\nswimming things\r\nnotebook & two pens\r\n"
        "snacks for the train\r\n"
    ),
    "diary-zh.txt": (
        "六月十二日　晴\n\n今天早上骑车去上班，路上风很大。中午在公司楼下吃了一碗牛肉面。"
        "下午修好了一个困扰了三天的问题，原来是时区设置错了。晚上回家烤了一个面包，颜色有点深，"
        "但是味道还不错。\n"
    ),
    "tabs-and-spaces.txt": (
        "Column notes\n\n"
        "start\tend\tactivity\n07:30\t08:00\tfeed the starter\n08:00\t08:22\tride to work\n"
        "12:30\t13:00\tlunch by the harbour\n    indented with four spaces\n\tindented with one tab\n"
        "trailing spaces here   \n"
    ),
}

# --------------------------------------------------------------------------- writers


def _json_line(record: dict) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"


def english_lines(rng: random.Random) -> list[bytes]:
    """en.jsonl: good records, two filtered (empty, blank) and six bad ones at fixed places."""
    lines = [_json_line({"id": f"en-{i:04d}", "text": english_doc(rng, i), "label": "prose"})
             for i in range(N_ENGLISH)]
    special = {
        10: b'{"id": "en-bad-json", "text": "this line was cut off in the middle of a str\n',
        25: b'{"id": "en-bad-number", "text": 12345, "label": "prose"}\n',
        40: b'{"id": "en-bad-null", "text": null, "label": "prose"}\n',
        55: b'{"id": "en-bad-missing", "body": "the text is under the wrong key", "label": "prose"}\n',
        70: b'{"id": "en-bad-utf8", "text": "caf\xe9 au lait, from a Latin-1 editor", "label": "prose"}\n',
        85: b'{"id": "en-bad-surrogate", "text": "half of a pair: \\ud800 end", "label": "prose"}\n',
        100: _json_line({"id": "en-empty", "text": "", "label": "prose"}),
        115: _json_line({"id": "en-blank", "text": "  \n\t  \r\n ", "label": "prose"}),
        # the same text twice under two ids: valid records, for dedup-style features
        130: _json_line({"id": "en-dup-a", "text": "A backup that has never been restored is a hope.",
                         "label": "prose"}),
        131: _json_line({"id": "en-dup-b", "text": "A backup that has never been restored is a hope.",
                         "label": "prose"}),
    }
    for pos in sorted(special, reverse=True):
        lines.insert(pos, special[pos])
    return lines


def _csv_row(fields: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(fields)
    return out.getvalue().encode("utf-8")


def web_csv_bytes(rng: random.Random) -> bytes:
    """web.csv (id,text,label,url): good rows, two filtered (empty, blank) and three bad rows."""
    rows = [_csv_row(["id", "text", "label", "url"])]
    for i in range(N_WEB):
        url, text = web_doc(rng, i)
        rows.append(_csv_row([f"web-{i:04d}", text, "web", url]))
    special = {
        15: b'web-bad-extra-field,"one field too many",web,https://example.com/x,surplus\n',
        21: _csv_row(["web-empty", "", "web", "https://example.com/empty"]),
        30: b"web-bad-short-row\n",
        41: _csv_row(["web-blank", " \t \r\n  ", "web", "https://example.com/blank"]),
        60: b'web-bad-utf8,"He said \x93hello\x94 in Windows-1252 quotes",web,https://example.com/cp1252\n',
    }
    for pos in sorted(special, reverse=True):
        rows.insert(pos, special[pos])
    return b"".join(rows)


def write_all(out_dir: Path) -> None:
    """Write every corpus file under out_dir, byte-identically on every run."""
    rng = random.Random(SEED)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "en.jsonl").write_bytes(b"".join(english_lines(rng)))

    zh = b"".join(_json_line({"id": f"zh-{i:04d}", "text": chinese_doc(rng, i), "label": "chinese"})
                  for i in range(N_CHINESE))
    with open(out_dir / "zh.jsonl.gz", "wb") as raw, gzip.GzipFile(
        filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9
    ) as gz:
        gz.write(zh)

    code = [code_doc(rng, i) for i in range(N_CODE)]
    table = pa.table({
        "id": [f"code-{i:04d}" for i in range(N_CODE)],
        "text": [text for _, text in code],
        "label": ["code"] * N_CODE,
        "lang": [lang for lang, _ in code],
    })
    pq.write_table(table, out_dir / "code.parquet", compression="zstd", row_group_size=32)

    (out_dir / "web.csv").write_bytes(web_csv_bytes(rng))

    notes = out_dir / "notes"
    notes.mkdir(exist_ok=True)
    for name, text in NOTES.items():
        (notes / name).write_bytes(text.encode("utf-8"))


if __name__ == "__main__":
    write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "corpus")
