"""Small lexicons of our own for the built-in synthetic corpus (`builtin.py`).

Everything here was written for this project: common surnames and given-name characters,
real provinces/cities/districts (public geography, so addresses stay consistent), and invented
companies, brands, games, films, books and address parts. Nothing is taken from a corpus.

Each lexicon is a function `draw(rng, ctx) -> Phrase`. A `Phrase` is a tuple of
`(word, part_of_speech)` pairs: the text is the words joined, and the split into words is what
the word-segmented release formats (MSRA, Weibo, People's Daily 1998) need, e.g. a person is
`(("张", "nr"), ("晓明", "nr"))` because People's Daily writes surname and given name as two
`/nr` words. A part of speech of "" means "let the writer decide" (it knows the entity type).

`ctx` is a per-sentence dict: `ctx["fullwidth"]` asks for full-width digits (the People's Daily
1998 style), and the geography lexicons use it to keep a province -> city -> district chain
consistent inside one address (a city drawn right after a province lies in that province).
"""

from __future__ import annotations

import random
from typing import Callable

Word = tuple[str, str]
Phrase = tuple[Word, ...]
Draw = Callable[[random.Random, dict], Phrase]

# ----------------------------------------------------------------------------- people

SURNAMES = tuple(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾田董袁潘于蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦方白邹孟熊秦邱江尹薛段雷侯龙史陶黎贺顾毛郝龚"
    "邵万钱严武戴莫孔向汤") + ("欧阳", "司马", "上官", "诸葛")

GIVEN_NAME_CHARS = tuple(
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚文辉鑫宇浩晨思雨欣怡涵博俊峰琳婷宁海波建国华志"
    "红玉兰春梅晓亮飞云凯琪嘉昊泽可心安诗雪彤瑶逸天然佳轩航帆远康乐哲睿璐颖慧龙鹏昕蕾岚松柏")

FOREIGN_FIRST = ("艾伦", "玛丽", "汤姆", "安娜", "彼得", "索菲亚", "马克", "莉莉", "卡尔", "伊娃")
FOREIGN_LAST = ("米勒", "格林", "卡特", "罗宾逊", "霍夫曼", "威尔逊", "莫里斯", "贝克", "沃森")

# Weibo's nominal person mentions (PER.NOM): people named by role, not by name.
PERSON_NOMINALS = (
    "老师", "妈妈", "爸爸", "男朋友", "女朋友", "同事", "网友", "医生", "小伙伴", "室友", "闺蜜",
    "老板", "同学", "外婆", "护士", "司机", "粉丝", "邻居")

ASCII_NAMES = ("Tony", "Lucy", "Kevin", "Grace", "Leo", "Mia", "Jason", "Iris", "Ethan", "Nina")
NICKNAMES = (
    "小熊不吃糖", "momo酱", "橘子汽水", "追风的猫", "Lily_99", "山间小路", "阿飞同学", "今天也要加油",
    "kk2020", "半糖主义")

# ----------------------------------------------------------------------------- places

# Real provinces -> cities -> districts (public geography), so an address chain is consistent.
GEOGRAPHY: dict[str, dict[str, tuple[str, ...]]] = {
    "浙江省": {"杭州市": ("西湖区", "拱墅区", "余杭区", "滨江区"), "宁波市": ("鄞州区", "海曙区", "江北区"),
            "温州市": ("鹿城区", "瓯海区")},
    "江苏省": {"南京市": ("鼓楼区", "玄武区", "江宁区"), "苏州市": ("姑苏区", "吴中区", "相城区"),
            "无锡市": ("梁溪区", "滨湖区")},
    "广东省": {"广州市": ("天河区", "越秀区", "海珠区"), "深圳市": ("南山区", "福田区", "宝安区"),
            "佛山市": ("禅城区", "南海区")},
    "四川省": {"成都市": ("武侯区", "锦江区", "青羊区"), "绵阳市": ("涪城区", "游仙区")},
    "湖北省": {"武汉市": ("江汉区", "洪山区", "武昌区"), "宜昌市": ("西陵区", "伍家岗区")},
    "山东省": {"济南市": ("历下区", "槐荫区"), "青岛市": ("市南区", "崂山区", "黄岛区")},
    "河南省": {"郑州市": ("金水区", "二七区", "中原区"), "洛阳市": ("涧西区", "老城区")},
    "福建省": {"福州市": ("鼓楼区", "台江区"), "厦门市": ("思明区", "湖里区")},
    "湖南省": {"长沙市": ("岳麓区", "天心区", "雨花区"), "株洲市": ("天元区", "芦淞区")},
    "陕西省": {"西安市": ("雁塔区", "碑林区", "未央区"), "宝鸡市": ("渭滨区", "金台区")},
}
MUNICIPALITIES = ("北京", "上海", "天津", "重庆")
COUNTRIES = (
    "中国", "美国", "日本", "韩国", "英国", "法国", "德国", "俄罗斯", "印度", "巴西", "加拿大", "澳大利亚",
    "新加坡", "泰国", "越南", "埃及", "南非", "意大利", "西班牙", "墨西哥", "阿根廷", "土耳其", "新西兰")
# Rivers, lakes, mountains, seas and regions: locations that are not political units.
NATURAL_PLACES = (
    "长江", "黄河", "珠江", "太湖", "洞庭湖", "鄱阳湖", "泰山", "华山", "峨眉山", "青藏高原", "东南亚",
    "中东", "太平洋", "大西洋", "南海", "东海", "渤海", "华北", "华南", "长三角", "珠三角", "黄土高原",
    "江南", "秦岭", "塔里木盆地", "天山")
NATURAL_PARTS = ("流域", "沿岸", "中下游", "以南", "北麓", "沿线")
SCENES = (
    "西湖", "故宫", "黄山", "鼓浪屿", "外滩", "九寨沟", "张家界", "颐和园", "千岛湖", "乌镇", "丽江古城",
    "布达拉宫", "天坛", "灵隐寺", "漓江", "青峰山国家森林公园", "白鹭湾湿地公园", "月牙湖风景区",
    "云溪古镇", "石门峡漂流")
# Weibo's nominal places: a country or city named generically (GPE.NOM), a place (LOC.NOM).
GPE_NOMINALS = ("祖国", "家乡", "全国", "国内", "这座城市", "老家", "全省")
LOC_NOMINALS = ("公园", "海边", "小区", "操场", "山顶", "湖边", "地铁站", "商场", "图书馆门口", "江边")
# Nominal organisations (ORG.NOM).
ORG_NOMINALS = ("公司", "学校", "医院", "银行", "单位", "俱乐部", "球队", "乐队", "学生会", "社团")

# ----------------------------------------------------------------------------- organisations

NAME_CORES = (
    "星海", "云帆", "远景", "恒信", "华岳", "蓝鲸", "青禾", "金穗", "天工", "博源", "中拓", "鼎盛", "凌云",
    "瑞丰", "百川", "新航", "联创", "启明", "澄江", "万象", "明途", "汇通", "长风", "嘉禾")
INDUSTRIES = (
    "科技", "电子", "网络", "生物", "传媒", "地产", "物流", "食品", "汽车", "医药", "能源", "教育", "数码",
    "纺织", "机械", "文化")
COMPANY_SUFFIXES = ("有限公司", "股份有限公司", "集团", "集团有限公司", "公司")
ASCII_COMPANIES = ("XK-Tech", "Novalink", "Lumo", "Tivra", "Mirabo", "Quto", "Oakra")
ORG_SUFFIXES = (
    "协会", "研究院", "研究所", "交响乐团", "红十字会", "博物馆", "图书馆", "人民医院", "基金会", "商会",
    "青年志愿者协会", "书法家协会", "第一中学", "实验小学")
CLUB_SUFFIXES = ("足球俱乐部", "篮球队", "排球队", "电竞俱乐部", "乒乓球队")
UNIVERSITY_SUFFIXES = (
    "大学", "师范大学", "理工大学", "科技大学", "财经大学", "医科大学", "职业技术学院", "外国语学院")
MEDIA_SUFFIXES = ("日报", "晚报", "电视台", "广播电台", "新闻网")
NATIONAL_GOVERNMENT = (
    "国务院", "外交部", "教育部", "商务部", "财政部", "国家统计局", "最高人民法院", "生态环境部",
    "交通运输部", "国家发展和改革委员会", "文化和旅游部")
LOCAL_GOVERNMENT_SUFFIXES = (
    "人民政府", "教育局", "公安局", "卫生健康委员会", "人民法院", "税务局", "财政局", "商务局",
    "交通运输局", "文化和旅游局", "市场监督管理局")

# ----------------------------------------------------------------------------- products

BRANDS = (
    "云帆", "澜途", "青柚", "木棉记", "北极星", "拾光", "简约家", "森野", "布谷鸟", "橙意", "暖阳", "极客派",
    "山茶集", "知竹", "小蓝鲸", "XK-200", "Kelo", "NOVA", "Lumo", "Velin", "Oakra", "Tivra")
ASCII_BRANDS = ("Kelo", "NOVA", "Lumo", "Velin", "Oakra", "Tivra", "Quto", "Mirabo")
COMMODITIES = (
    "连衣裙", "T恤", "牛仔裤", "运动鞋", "帆布鞋", "双肩包", "手机壳", "蓝牙耳机", "充电宝", "数据线",
    "保温杯", "电饭煲", "空气炸锅", "洗面奶", "面膜", "口红", "卫衣", "羽绒服", "毛衣", "衬衫", "半身裙",
    "拖鞋", "四件套", "枕头", "积木", "猫粮", "狗粮", "茶叶", "坚果", "蜂蜜", "笔记本电脑", "机械键盘",
    "无线鼠标", "显示器", "USB数据线", "移动硬盘", "台灯", "收纳盒", "雨伞", "电动牙刷")
MODELS = ("X3", "S7", "Pro", "Max", "V20", "T1", "Air", "Mini", "K9", "Note5")
PRODUCT_KINDS = ("手机", "平板", "笔记本", "智能手表", "耳机", "电视", "扫地机器人", "相机")
PRODUCT_EDITIONS = ("青春版", "标准版", "旗舰版", "限量版")

# ----------------------------------------------------------------------------- works

GAMES = (
    "星际远征", "幻海迷踪", "龙骑战歌", "像素农场", "暗影猎手", "王城争霸", "天空之翼", "钢铁洪流", "机甲纪元",
    "仙侠奇缘", "荒岛求生", "极速狂飙", "魔域传说", "萌宠大作战", "梦幻花园", "像素农场2", "幻海迷踪：觉醒",
    "Q版三国")
MOVIES = (
    "归途", "长夜将明", "山海之间", "追风少年", "第七天空", "无声的河", "南方来信", "红色信号", "海上灯塔",
    "北纬三十度", "寻找阿木", "夏日终曲", "最后一班车", "小镇往事", "长夜将明：黎明之前", "回声2")
BOOKS = (
    "山河笔记", "时间的褶皱", "乡村教师手记", "数字经济导论", "深海来客", "雾都来信", "旧物志", "算法之美",
    "城南旧梦", "飞鸟与鱼", "山河笔记：一个村庄的四十年", "数字经济导论：理论与实践", "Python入门(第3版)")

# ----------------------------------------------------------------------------- careers

# Job titles by where they occur, so a template can keep a title in a plausible context.
CORPORATE_TITLES = (
    "总经理", "副总经理", "董事长", "董事", "独立董事", "监事", "监事会主席", "财务总监", "总工程师",
    "董事会秘书", "技术总监", "项目经理", "销售经理", "总裁", "副总裁", "首席执行官", "CEO", "CFO",
    "总监", "部门经理")
GOVERNMENT_TITLES = ("局长", "副局长", "主任", "副主任", "处长", "科长", "书记", "秘书长", "部长", "副部长")
PROFESSIONAL_TITLES = (
    "高级工程师", "工程师", "会计师", "高级会计师", "经济师", "研究员", "副研究员", "教授", "副教授", "讲师",
    "主治医师", "律师", "院长", "校长")
SPORTS_TITLES = ("主教练", "教练", "队长", "领队", "助理教练")
FILM_TITLES = ("导演", "制片人", "编剧", "摄影指导", "监制")
TITLES = (CORPORATE_TITLES + GOVERNMENT_TITLES + PROFESSIONAL_TITLES + SPORTS_TITLES + FILM_TITLES
          + ("记者", "主编"))
DEGREES = (
    "本科", "大专", "硕士", "博士", "研究生", "中专", "学士", "硕士研究生", "博士研究生", "MBA", "EMBA",
    "大学本科", "博士后")
MAJORS = (
    "计算机科学与技术", "会计学", "工商管理", "金融学", "法学", "机械工程", "电子信息工程", "市场营销",
    "国际贸易", "土木工程", "化学工程", "临床医学", "汉语言文学", "英语", "经济学", "软件工程", "自动化",
    "财务管理", "材料科学", "应用数学", "新闻学", "企业管理", "工业设计", "统计学")
# Countries as Resume writes a nationality (the CONT span includes 国籍 / 籍).
CITIZENSHIP_COUNTRIES = ("中国", "美国", "加拿大", "新加坡", "澳大利亚", "英国", "日本", "德国")
ETHNIC_GROUPS = (
    "汉族", "回族", "满族", "蒙古族", "壮族", "苗族", "土家族", "彝族", "藏族", "维吾尔族", "朝鲜族", "白族",
    "侗族", "瑶族", "畲族")

# ----------------------------------------------------------------------------- times

RELATIVE_TIMES = (
    "今天", "昨天", "明天", "前天", "今年", "去年", "明年", "本周", "上周", "近日", "日前", "春节期间", "国庆节",
    "周末", "今晨", "当天")
DAY_PARTS = ("上午", "下午", "晚上", "凌晨", "中午")
# Relative days that combine with a part of the day (昨天上午, not 去年上午).
RELATIVE_DAYS = ("今天", "昨天", "明天", "前天", "当天")

# ----------------------------------------------------------------------------- addresses

TOWN_STEMS = (
    "城东", "城西", "文新", "古荡", "长安", "新塘", "东湖", "南苑", "青山", "白沙", "柳溪", "梅林", "石桥",
    "金桥", "龙泉", "望江", "凤凰", "清河", "丰收", "仓前")
TOWN_SUFFIXES = ("街道", "镇", "乡")
COMMUNITY_STEMS = (
    "翠苑", "文华", "桃源", "红星", "和平", "幸福", "新民", "东兴", "西溪", "秀水", "光明", "朝阳", "联丰",
    "兴隆", "上林", "下沙", "永安", "春晖", "康乐", "双桥")
ROAD_STEMS = (
    "文三", "学院", "莫干山", "天目山", "解放", "人民", "中山", "建设", "新华", "延安", "东风", "胜利", "工业",
    "科技", "创业", "滨江", "环城北", "凤起", "庆春", "古墩", "紫荆花", "体育场", "星光", "明珠", "振华")
ROAD_SUFFIXES = ("路", "路", "街", "大道", "巷")
POI_STEMS = (
    "金色", "阳光", "华星", "锦绣", "天元", "绿城", "万家", "翡翠", "星河", "银泰", "东方", "世纪", "紫金",
    "龙湖", "恒泰", "嘉禾", "丽景", "碧水", "盛世", "海棠")
POI_SUFFIXES = (
    "家园", "大厦", "花园", "广场", "公寓", "小区", "中心", "商城", "苑", "国际", "名邸", "新村", "时代广场",
    "医院", "小学", "中学", "酒店", "菜市场")
SUBPOIS = (
    "东区", "西区", "南区", "北区", "A座", "B座", "C座", "一期", "二期", "东门", "北门", "裙楼", "南楼",
    "商务楼", "西苑", "3号门")
DEVZONE_SUFFIXES = (
    "经济技术开发区", "高新技术产业开发区", "工业园区", "科技园", "高新区", "软件园", "物流园", "创业园")
ASSISTS = (
    "旁", "旁边", "对面", "附近", "东侧", "西侧", "南侧", "北侧", "斜对面", "往东", "往西", "往南", "往北",
    "后面", "隔壁", "内")
INTERSECTIONS = ("交叉口", "路口", "十字路口", "交汇处", "口")
CHINESE_DIGITS = "一二三四五六七八九十"

# ----------------------------------------------------------------------------- segmentation

# Part-of-speech tags for the function and content words our templates use, in the People's
# Daily 1998 tag set (n noun, v verb, a adjective, d adverb, p preposition, c conjunction,
# u particle, r pronoun, m numeral, q measure word, f direction, w punctuation, vn verbal noun,
# b distinguishing word, l idiom-like phrase, y modal particle, s place word, k suffix).
# `builtin_formats.segment` splits template text into words by forward maximum matching on this
# table, so every word a People's Daily template uses must be listed (a test checks it). No word here
# has an entity tag (nr ns nt t): a People's Daily reader would otherwise see an entity that the
# generator did not mean.
WORD_POS: dict[str, str] = {
    # particles, prepositions, conjunctions, pronouns, adverbs
    "的": "u", "了": "u", "着": "u", "过": "u", "地": "u", "得": "u", "等": "u", "之": "u", "所": "u",
    "在": "p", "从": "p", "对": "p", "向": "p", "与": "p", "以": "p", "为": "p", "将": "d", "于": "p",
    "据": "p", "由": "p", "和": "c", "同": "p", "及": "c", "并": "c", "但": "c", "把": "p", "给": "p",
    "比": "p", "按照": "p", "截至": "p", "经过": "p", "根据": "p", "关于": "p", "围绕": "p",
    "他": "r", "她": "r", "我": "r", "我们": "r", "他们": "r", "这": "r", "这些": "r", "这次": "r",
    "这里": "r", "那里": "r", "各": "r", "各地": "r", "该": "r", "其": "r", "自己": "r", "大家": "r",
    "这项": "r", "本": "r", "每": "r", "所有": "b",
    "也": "d", "都": "d", "已": "d", "已经": "d", "还": "d", "再": "d", "又": "d", "就": "d", "不": "d",
    "很": "d", "更": "d", "最": "d", "正": "b", "正在": "d", "共": "d", "仍": "d", "将要": "d",
    "进一步": "d", "切实": "ad", "认真": "ad", "十分": "d", "非常": "d", "首次": "d", "一直": "d",
    "一道": "d", "一起": "d", "全面": "ad", "积极": "ad", "累计": "v", "共同": "d", "深入": "ad",
    "分别": "d", "随后": "d", "此前": "d", "目前": "d", "同时": "d", "即将": "d", "来之不易": "l",
    # measure words, numerals, directions
    "个": "q", "名": "q", "位": "q", "次": "q", "项": "q", "家": "q", "天": "q", "多": "m", "万": "m",
    "亿": "m", "三": "m", "两": "m", "一": "m", "人次": "q", "万人次": "m", "元": "q", "号": "q",
    "线": "n", "余": "m", "新": "a", "上": "f", "中": "f", "内": "f", "后": "f", "前": "f", "以来": "f",
    "期间": "f", "之间": "f", "方面": "n", "一些": "m",
    # verbs and verbal nouns
    "是": "v", "有": "v", "说": "v", "表示": "v", "指出": "v", "强调": "v", "认为": "v", "介绍": "v",
    "召开": "v", "举行": "v", "举办": "v", "发布": "v", "宣布": "v", "报道": "v", "获悉": "v", "会见": "v",
    "访问": "v", "抵达": "v", "开始": "v", "推动": "v", "加强": "v", "扩大": "v", "签署": "v", "出席": "v",
    "参加": "v", "当选": "v", "要求": "v", "做好": "v", "坚持": "v", "获得": "v", "接待": "v", "开通": "v",
    "运营": "vn", "设立": "v", "计划": "v", "出版": "v", "撰写": "v", "学习": "v", "工作": "vn",
    "发展": "vn", "合作": "vn", "保护": "vn", "考察": "vn", "调研": "vn", "建设": "vn", "投资": "vn",
    "访华": "v", "讲话": "vn", "出现": "v", "总结": "v", "值得": "v", "面临": "v", "吸引": "v",
    "增长": "v", "夺得": "v", "成为": "v", "来到": "v", "开展": "v", "展开": "v", "看望": "v",
    "慰问": "v", "走访": "v", "听取": "v", "汇报": "vn", "回答": "v", "提问": "vn", "感慨": "v",
    "告诉": "v", "透露": "v", "签约": "v", "落户": "v", "启动": "v", "完成": "v", "通过": "v",
    "审议": "v", "决定": "v", "任命": "v", "担任": "v", "主持": "v", "致辞": "v", "发表": "v",
    "介入": "v", "调查": "vn", "救援": "vn", "转移": "v", "安置": "v", "受灾": "v", "恢复": "v",
    "生产": "vn", "取得": "v", "喜获": "v", "丰收": "vn", "收入": "n", "继续": "v", "愿": "v",
    "希望": "v", "支持": "v", "欢迎": "v", "交流": "vn", "会谈": "vn", "对话": "vn", "访问团": "n",
    "代表团": "n", "开幕式": "n", "闭幕式": "n", "发布会": "n", "新闻发布会": "n", "座谈会": "n",
    "研讨会": "n", "年会": "n", "会议": "n", "活动": "vn", "比赛": "vn", "举措": "n", "稳中求进": "l",
    # nouns, adjectives, distinguishing words
    "记者": "n", "专家": "n", "群众": "n", "代表": "n", "单位": "n", "有关": "vn", "情况": "n",
    "项目": "n", "资助": "vn", "地区": "n", "生态": "n", "挑战": "vn", "和平": "n", "各方": "r",
    "地方": "n", "人": "n", "农民": "n", "人均": "b", "成绩": "n", "冠军": "n", "分": "q",
    "公司": "n", "明年": "n", "分支机构": "n", "主席": "n", "一届": "m", "新一届": "b", "通知": "n",
    "防汛": "vn", "游客": "n", "两国": "n", "外长": "n", "一书": "n", "近": "a", "全体": "n",
    "各项": "r", "成果": "n", "气氛": "n", "热烈": "a", "科研": "n", "人员": "n", "野外": "s",
    "强降雨": "n", "天气": "n", "地铁": "n", "投资环境": "n", "信心": "n", "消息": "n", "报告": "n",
    "经济": "n", "增速": "n", "预期": "vn", "高于": "v", "芯片": "n", "新一代": "b", "规模": "n",
    "城市": "n", "农村": "n", "学生": "n", "老师": "n", "医生": "n", "企业": "n", "市场": "n",
    "政策": "n", "文件": "n", "重要": "a", "重大": "a", "友好": "a", "双方": "n", "领域": "n",
    "交通": "n", "教育": "vn", "文化": "n", "旅游": "vn", "科技": "n", "环境": "n", "问题": "n",
    "措施": "n", "工程": "n", "水平": "n", "群众性": "n", "居民": "n", "志愿者": "n", "灾区": "n",
    "物资": "n", "节日": "n", "礼物": "n", "慰问品": "n", "困难": "a", "家庭": "n",
    "儿童": "n", "老人": "n", "青年": "n", "学校": "n", "医院": "n", "社区": "n", "服务": "vn",
    "中心": "n", "能力": "n", "质量": "n", "效益": "n", "产品": "n", "出口": "vn", "贸易": "vn",
    "规划": "n", "目标": "n", "任务": "n", "讲": "v", "会": "v", "到": "v", "去": "v", "来": "v",
    "看": "v", "变化": "vn", "太": "d", "大": "a", "好": "a", "多年": "m", "曾": "d", "当地": "s",
    "部分": "n", "一线": "n", "现场": "s", "各界": "r", "人士": "n", "代表们": "n", "热情": "a",
    "认真地": "d", "介绍说": "v", "据悉": "v", "此外": "c", "另外": "c", "因此": "c", "为了": "p",
    "共有": "v", "获": "v", "首发式": "n", "方式": "n", "本届": "r", "年度": "n",
    "深化": "v", "改革": "vn", "开放": "vn", "创新": "vn", "联合": "vn", "声明": "n", "协议": "n",
    "战略": "n", "全面深化": "v", "此": "r", "充满": "v", "为期": "v", "要": "v",
    "不少": "m", "董事长": "n", "第": "m", "景区": "n", "达到": "v", "朋友": "n", "副": "b",
    "部门": "n", "出台": "v", "屏障": "n", "作": "v", "题为": "v", "等地": "n", "同比": "d",
    "总统": "n", "总理": "n", "副总理": "n", "赛季": "n", "誓师大会": "n",
}

PUNCTUATION = frozenset("，。、：；！？（）“”‘’《》—…·,.:;!?()\"'-～~[]#@%")


# ----------------------------------------------------------------------------- helpers

def one_word(text: str, pos: str = "") -> Phrase:
  return ((text, pos),)


def text_of(phrase: Phrase) -> str:
  return "".join(word for word, _ in phrase)


def _digits(number: int, ctx: dict) -> str:
  """Decimal digits, full-width when the sentence asks for People's Daily style."""
  text = str(number)
  if ctx.get("fullwidth"):
    text = text.translate(_FULLWIDTH_DIGITS)
  return text


_FULLWIDTH_DIGITS = str.maketrans("0123456789", "０１２３４５６７８９")


def _choice(items: tuple[str, ...], pos: str = "") -> Draw:
  def draw(rng: random.Random, ctx: dict) -> Phrase:
    del ctx  # a plain list needs no sentence context
    return one_word(rng.choice(items), pos)
  return draw


def _chinese_number(n: int) -> str:
  """1..99 as Chinese numerals (十二, 二十, 三十五)."""
  tens, units = divmod(n, 10)
  if tens == 0:
    return CHINESE_DIGITS[units - 1]
  head = "" if tens == 1 else CHINESE_DIGITS[tens - 1]
  return head + "十" + (CHINESE_DIGITS[units - 1] if units else "")


# ----------------------------------------------------------------------------- draws

def person(rng: random.Random, ctx: dict) -> Phrase:
  """Mostly a Chinese surname + 1-2 character given name; sometimes a transliterated name."""
  del ctx
  if rng.random() < 0.08:
    return one_word(f"{rng.choice(FOREIGN_FIRST)}·{rng.choice(FOREIGN_LAST)}", "nr")
  given = "".join(rng.choice(GIVEN_NAME_CHARS) for _ in range(1 if rng.random() < 0.3 else 2))
  return ((rng.choice(SURNAMES), "nr"), (given, "nr"))


def _province(rng: random.Random, ctx: dict, short_ok: bool = True) -> str:
  name = rng.choice(tuple(GEOGRAPHY))
  ctx["province"] = name
  return name[:-1] if short_ok and rng.random() < 0.3 else name


def province(rng: random.Random, ctx: dict) -> Phrase:
  return one_word(_province(rng, ctx))


def _city(rng: random.Random, ctx: dict, short_ok: bool = True) -> str:
  prov = ctx.pop("province", None) or rng.choice(tuple(GEOGRAPHY))
  name = rng.choice(tuple(GEOGRAPHY[prov]))
  ctx["city"] = (prov, name)
  return name[:-1] if short_ok and rng.random() < 0.3 else name


def city(rng: random.Random, ctx: dict) -> Phrase:
  """A prefecture city (in the province drawn just before, if any) or a municipality."""
  if "province" not in ctx and rng.random() < 0.15:
    return one_word(rng.choice(MUNICIPALITIES))
  return one_word(_city(rng, ctx))


def _district(rng: random.Random, ctx: dict) -> str:
  """A district of the city drawn just before (if any), else of a random city."""
  if "city" in ctx:
    prov, name = ctx.pop("city")
  else:
    prov = rng.choice(tuple(GEOGRAPHY))
    name = rng.choice(tuple(GEOGRAPHY[prov]))
  return rng.choice(GEOGRAPHY[prov][name])


def district(rng: random.Random, ctx: dict) -> Phrase:
  return one_word(_district(rng, ctx))


def address_prov(rng: random.Random, ctx: dict) -> Phrase:
  return one_word(_province(rng, ctx, short_ok=False))


def address_city(rng: random.Random, ctx: dict) -> Phrase:
  return one_word(_city(rng, ctx, short_ok=False))


def hometown(rng: random.Random, ctx: dict) -> Phrase:
  """Resume's place of origin: "浙江宁波" (province + city, short forms)."""
  del ctx
  prov = rng.choice(tuple(GEOGRAPHY))
  name = rng.choice(tuple(GEOGRAPHY[prov]))
  return one_word(prov[:-1] + name[:-1] if rng.random() < 0.7 else prov[:-1])


def full_address(rng: random.Random, ctx: dict) -> Phrase:
  """One CLUENER-style address mention: 浙江省杭州市西湖区 / 宁波市鄞州区文三路88号 / 深圳南山."""
  prov = rng.choice(tuple(GEOGRAPHY))
  name = rng.choice(tuple(GEOGRAPHY[prov]))
  dist = rng.choice(GEOGRAPHY[prov][name])
  shape = rng.randrange(4)
  if shape == 0:
    text = prov + name + dist
  elif shape == 1:
    text = name + dist + text_of(road(rng, ctx)) + text_of(road_number(rng, ctx))
  elif shape == 2:
    text = name[:-1] + dist[:-1]
  else:
    text = dist + text_of(town(rng, ctx)) + text_of(community(rng, ctx))
  return one_word(text)


def natural_place(rng: random.Random, ctx: dict) -> Phrase:
  """A river, mountain or region; sometimes with a part word, written as two words."""
  del ctx
  base = rng.choice(NATURAL_PLACES)
  if rng.random() < 0.2:
    return ((base, "ns"), (rng.choice(NATURAL_PARTS), "f"))
  return one_word(base)


def company(rng: random.Random, ctx: dict) -> Phrase:
  """Invented company names; some carry a city in parentheses or are ASCII names."""
  roll = rng.random()
  core = rng.choice(NAME_CORES) + rng.choice(INDUSTRIES)
  if roll < 0.1:
    return one_word(rng.choice(ASCII_COMPANIES) + rng.choice(("公司", "集团", "科技公司")))
  if roll < 0.22:
    where = text_of(city(rng, ctx)).removesuffix("市")
    return one_word(f"{core}（{where}）有限公司")
  return one_word(core + rng.choice(COMPANY_SUFFIXES))


def ascii_company(rng: random.Random, ctx: dict) -> Phrase:
  del ctx
  return one_word(rng.choice(ASCII_COMPANIES))


def _place_or_core(rng: random.Random, ctx: dict, p_place: float) -> str:
  """A city's short name (probability `p_place`) or an invented name core."""
  if rng.random() < p_place:
    return text_of(city(rng, ctx)).removesuffix("市")
  return rng.choice(NAME_CORES)


def organisation(rng: random.Random, ctx: dict) -> Phrase:
  """Associations, institutes, clubs, hospitals: place or name core + kind, as two words."""
  place = _place_or_core(rng, ctx, 0.6)
  return ((place, "ns" if place not in NAME_CORES else "nz"), (rng.choice(ORG_SUFFIXES), "n"))


def club(rng: random.Random, ctx: dict) -> Phrase:
  """A sports club or team: 杭州足球俱乐部, 蓝鲸电竞俱乐部."""
  place = _place_or_core(rng, ctx, 0.5)
  return ((place, "ns" if place not in NAME_CORES else "nz"), (rng.choice(CLUB_SUFFIXES), "n"))


def university(rng: random.Random, ctx: dict) -> Phrase:
  place = text_of(city(rng, ctx)).removesuffix("市")
  return ((place, "ns"), (rng.choice(UNIVERSITY_SUFFIXES), "n"))


def media(rng: random.Random, ctx: dict) -> Phrase:
  place = text_of(city(rng, ctx)).removesuffix("市")
  return ((place, "ns"), (rng.choice(MEDIA_SUFFIXES), "n"))


def government(rng: random.Random, ctx: dict) -> Phrase:
  """A national ministry, or a city/province + local office written as two words."""
  if rng.random() < 0.35:
    return one_word(rng.choice(NATIONAL_GOVERNMENT))
  place = text_of(city(rng, ctx) if rng.random() < 0.7 else province(rng, ctx))
  return ((place, "ns"), (rng.choice(LOCAL_GOVERNMENT_SUFFIXES), "n"))


def product(rng: random.Random, ctx: dict) -> Phrase:
  """A branded product: 云帆X3手机, 澜途Pro（青春版）, NOVA-K9."""
  del ctx
  brand = rng.choice(BRANDS[:15])
  model = rng.choice(MODELS)
  roll = rng.random()
  if roll < 0.15:
    return one_word(f"{brand}{model}（{rng.choice(PRODUCT_EDITIONS)}）")
  if roll < 0.25:
    return one_word(f"{rng.choice(ASCII_BRANDS)}-{model}")
  return one_word(brand + model + rng.choice(PRODUCT_KINDS))


def time_expression(rng: random.Random, ctx: dict) -> Phrase:
  """A date or relative time, one word per part (People's Daily writes 1998年/t 1月/t 5日/t)."""
  roll = rng.random()
  year = (_digits(rng.randrange(1995, 2025), ctx) + "年", "t")
  month = (_digits(rng.randrange(1, 13), ctx) + "月", "t")
  day = (_digits(rng.randrange(1, 29), ctx) + "日", "t")
  if roll < 0.2:
    return (year, month, day)
  if roll < 0.4:
    return (month, day)
  if roll < 0.5:
    return (year, month)
  if roll < 0.6:
    return ((_digits(rng.randrange(1, 13), ctx) + "月", "t"), day, (rng.choice(DAY_PARTS), "t"))
  if roll < 0.75:
    return ((rng.choice(RELATIVE_DAYS), "t"), (rng.choice(DAY_PARTS), "t"))
  return one_word(rng.choice(RELATIVE_TIMES), "t")


def citizenship(rng: random.Random, ctx: dict) -> Phrase:
  del ctx
  return one_word(rng.choice(CITIZENSHIP_COUNTRIES) + ("国籍" if rng.random() < 0.8 else "籍"))


# --- address parts (CCKS2021)

def town(rng: random.Random, ctx: dict) -> Phrase:
  del ctx
  return one_word(rng.choice(TOWN_STEMS) + rng.choice(TOWN_SUFFIXES))


def community(rng: random.Random, ctx: dict) -> Phrase:
  del ctx
  return one_word(rng.choice(COMMUNITY_STEMS) + rng.choice(("社区", "社区", "村")))


def village(rng: random.Random, ctx: dict) -> Phrase:
  del ctx
  return one_word(rng.choice(COMMUNITY_STEMS) + "村")


def village_group(rng: random.Random, ctx: dict) -> Phrase:
  del ctx
  n = _chinese_number(rng.randrange(1, 13))
  return one_word(rng.choice((f"{n}组", f"{n}组", f"第{n}村民小组", f"{n}队")))


def road(rng: random.Random, ctx: dict) -> Phrase:
  del ctx
  return one_word(rng.choice(ROAD_STEMS) + rng.choice(ROAD_SUFFIXES))


def road_number(rng: random.Random, ctx: dict) -> Phrase:
  n = _digits(rng.randrange(1, 999), ctx)
  if rng.random() < 0.15:
    return one_word(f"{n}-{rng.randrange(1, 9)}号")
  return one_word(f"{n}号")


def poi(rng: random.Random, ctx: dict) -> Phrase:
  del ctx
  return one_word(rng.choice(POI_STEMS) + rng.choice(POI_SUFFIXES))


def subpoi(rng: random.Random, ctx: dict) -> Phrase:
  del ctx
  return one_word(rng.choice(SUBPOIS))


def devzone(rng: random.Random, ctx: dict) -> Phrase:
  del ctx
  return one_word(rng.choice(TOWN_STEMS + ROAD_STEMS[:6]) + rng.choice(DEVZONE_SUFFIXES))


def house_number(rng: random.Random, ctx: dict) -> Phrase:
  del ctx
  n = rng.randrange(1, 40)
  return one_word(rng.choice((f"{n}幢", f"{n}号楼", f"{n}栋", f"{rng.choice('ABCDE')}栋")))


def village_house_number(rng: random.Random, ctx: dict) -> Phrase:
  del ctx
  return one_word(f"{rng.randrange(1, 300)}号")


def cell_number(rng: random.Random, ctx: dict) -> Phrase:
  del ctx
  return one_word(f"{rng.randrange(1, 9)}单元")


def floor_number(rng: random.Random, ctx: dict) -> Phrase:
  del ctx
  n = rng.randrange(1, 33)
  return one_word(rng.choice((f"{n}楼", f"{n}层", f"{n}F")))


def assist(rng: random.Random, ctx: dict) -> Phrase:
  del ctx
  return one_word(rng.choice(ASSISTS))


def distance(rng: random.Random, ctx: dict) -> Phrase:
  del ctx
  return one_word(rng.choice((f"{rng.randrange(1, 50) * 10}米", f"{rng.randrange(1, 9)}公里")))


def intersection(rng: random.Random, ctx: dict) -> Phrase:
  del ctx
  return one_word(rng.choice(INTERSECTIONS))


# --- filler (never an entity)

def number(rng: random.Random, ctx: dict) -> Phrase:
  return one_word(_digits(rng.randrange(2, 300), ctx), "m")


def percent(rng: random.Random, ctx: dict) -> Phrase:
  text = f"{rng.randrange(1, 40)}.{rng.randrange(10)}%"
  if ctx.get("fullwidth"):
    text = text.translate(_FULLWIDTH_DIGITS).replace("%", "％").replace(".", "．")
  return one_word(text, "m")


def age(rng: random.Random, ctx: dict) -> Phrase:
  return one_word(_digits(rng.randrange(28, 66), ctx), "m")


def birth_year(rng: random.Random, ctx: dict) -> Phrase:
  return one_word(_digits(rng.randrange(1955, 1995), ctx), "m")


def work_year(rng: random.Random, ctx: dict) -> Phrase:
  """A year in a career (joined a company, took a post)."""
  return one_word(_digits(rng.randrange(1990, 2021), ctx), "m")


def month_number(rng: random.Random, ctx: dict) -> Phrase:
  return one_word(_digits(rng.randrange(1, 13), ctx), "m")


def room_number(rng: random.Random, ctx: dict) -> Phrase:
  del ctx
  return one_word(f"{rng.randrange(1, 30)}{rng.randrange(1, 9):02d}室")


LEXICONS: dict[str, Draw] = {
    # people
    "person": person,
    "person_nom": _choice(PERSON_NOMINALS),
    "ascii_name": _choice(ASCII_NAMES),
    "nick": _choice(NICKNAMES),
    # places
    "country": _choice(COUNTRIES),
    "province": province,
    "city": city,
    "district": district,
    "hometown": hometown,
    "address": full_address,
    "natural": natural_place,
    "scene": _choice(SCENES),
    "gpe_nom": _choice(GPE_NOMINALS),
    "loc_nom": _choice(LOC_NOMINALS),
    # organisations
    "company": company,
    "ascii_company": ascii_company,
    "org": organisation,
    "club": club,
    "university": university,
    "media": media,
    "gov": government,
    "org_nom": _choice(ORG_NOMINALS),
    # products and works
    "brand": _choice(BRANDS),
    "ascii_brand": _choice(ASCII_BRANDS),
    "commodity": _choice(COMMODITIES),
    "model": _choice(MODELS),
    "product": product,
    "game": _choice(GAMES),
    "movie": _choice(MOVIES),
    "book": _choice(BOOKS),
    # careers
    "title": _choice(TITLES),
    "corp_title": _choice(CORPORATE_TITLES),
    "gov_title": _choice(GOVERNMENT_TITLES),
    "pro_title": _choice(PROFESSIONAL_TITLES),
    "sports_title": _choice(SPORTS_TITLES),
    "film_title": _choice(FILM_TITLES),
    "degree": _choice(DEGREES),
    "major": _choice(MAJORS),
    "citizenship": citizenship,
    "ethnic": _choice(ETHNIC_GROUPS),
    # times
    "time": time_expression,
    # address parts
    "prov": address_prov,
    "addr_city": address_city,
    "addr_district": district,
    "town": town,
    "community": community,
    "village": village,
    "village_group": village_group,
    "road": road,
    "roadno": road_number,
    "poi": poi,
    "subpoi": subpoi,
    "devzone": devzone,
    "houseno": house_number,
    "village_houseno": village_house_number,
    "cellno": cell_number,
    "floorno": floor_number,
    "assist": assist,
    "distance": distance,
    "intersection": intersection,
    # filler
    "num": number,
    "pct": percent,
    "age": age,
    "birth_year": birth_year,
    "work_year": work_year,
    "month": month_number,
    "room": room_number,
}


def draw(name: str, rng: random.Random, ctx: dict) -> Phrase:
  """One phrase from lexicon `name`; unknown names raise a KeyError listing the known ones."""
  try:
    lexicon = LEXICONS[name]
  except KeyError:
    raise KeyError(f"unknown lexicon {name!r}; known: {', '.join(sorted(LEXICONS))}") from None
  return lexicon(rng, ctx)
