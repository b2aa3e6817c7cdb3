"""Category vocabularies of the synthetic world.

Every behaviour category owns merchants and bill items (with price ranges), SPM page paths,
mini-programs, apps and search queries. Lists are ordered by popularity: generators draw from
them with Zipf weights, so the first entries are the common ones and the tail is long.
Nothing here is random; it is data only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SOURCES: tuple[str, ...] = ("bill", "spm", "mini", "app", "search")


@dataclass(frozen=True)
class Category:
    name: str
    label: str  # human label used in text lines, e.g. "food delivery"
    merchants: tuple[str, ...]
    items: tuple[tuple[str, float, float], ...]  # (item, min price, max price) in CNY
    spm: tuple[str, ...]  # page paths below "Alipay home", popularity order
    minis: tuple[str, ...]
    apps: tuple[str, ...]
    queries: tuple[str, ...]
    # Relative activity by hour of day (24 values), used to place events in time.
    hours: tuple[float, ...] = field(default=())


def _hours(*peaks: tuple[int, float], base: float = 0.2) -> tuple[float, ...]:
    """A 24-hour profile: a low base (quieter at night) plus the given (hour, weight) peaks."""
    prof = [base * (0.15 if h < 6 else 1.0) for h in range(24)]
    for hour, weight in peaks:
        for d, f in ((-1, 0.4), (0, 1.0), (1, 0.4)):
            prof[(hour + d) % 24] += weight * f
    return tuple(prof)


CATEGORIES: tuple[Category, ...] = (
    Category(
        name="food_delivery",
        label="food delivery",
        merchants=("Meituan Waimai", "Ele.me", "KFC Delivery", "McDonald's McDelivery",
                   "Luckin Coffee", "Heytea", "Mixue Ice Cream & Tea", "Yang Guofu Malatang",
                   "Zhengxin Chicken Steak", "Lanzhou Beef Noodles", "Chagee", "Tastien Burger"),
        items=(("Braised pork rice", 18, 38), ("Spicy crayfish", 68, 168),
               ("Beef noodle soup", 16, 32), ("Milk tea with boba", 12, 28),
               ("Fried chicken bucket", 39, 89), ("Malatang bowl", 20, 45),
               ("Pork and chive dumplings (24 pcs)", 22, 40), ("Iced coconut latte", 9.9, 26),
               ("Hotpot set for two", 98, 228), ("Kung pao chicken with rice", 20, 36),
               ("Sushi combo", 45, 128), ("Congee and fried dough sticks", 9, 18),
               ("Cheeseburger meal", 25, 45), ("Sichuan boiled fish", 58, 118),
               ("Late-night barbecue skewers", 45, 150), ("Cold noodles and cucumber salad", 15, 28)),
        spm=("Food delivery > Ele.me store page", "Food delivery > Restaurant list > Sichuan cuisine",
             "Food delivery > Order confirmation > Pay now", "Food delivery > Coupon center > Claim red packet",
             "Food delivery > Order tracking > Rider map", "Food delivery > Restaurant list > Milk tea",
             "Food delivery > Search results > Noodles", "Food delivery > Store page > Reviews",
             "Food delivery > Late-night snacks", "Food delivery > Order history > Reorder"),
        minis=("Ele.me", "Meituan Waimai", "KFC", "Luckin Coffee", "Heytea Go", "McDonald's",
               "Mixue Order", "Starbucks Delivers"),
        apps=("Meituan", "Ele.me", "Dianping", "Luckin Coffee", "KFC"),
        queries=("cheap hotpot near me", "milk tea delivery", "late night snacks delivery",
                 "ele.me red packet coupon", "spicy crayfish takeout", "lunch delivery under 30 yuan",
                 "kfc crazy thursday", "luckin coffee coupon", "best malatang nearby",
                 "free delivery fee restaurants", "healthy salad delivery", "breakfast delivery open now"),
        hours=_hours((12, 3.0), (18, 2.5), (22, 1.0)),
    ),
    Category(
        name="groceries",
        label="groceries",
        merchants=("Hema Fresh", "Dingdong Maicai", "RT-Mart", "Walmart", "FamilyMart", "7-Eleven",
                   "Yonghui Superstore", "Pagoda Fruit", "Lawson", "Sam's Club"),
        items=(("Fresh vegetables", 8, 45), ("Free-range eggs (30)", 25, 45), ("Rice 5kg", 29, 79),
               ("Whole milk 1L x12", 45, 89), ("Seasonal fruit box", 30, 120), ("Pork belly 500g", 18, 40),
               ("Bottled water x24", 20, 48), ("Instant noodles pack", 10, 30), ("Tofu and bean sprouts", 5, 15),
               ("Cooking oil 5L", 59, 129), ("Frozen dumplings", 18, 45), ("Toilet paper x10", 25, 60)),
        spm=("Nearby > Supermarkets > Hema Fresh", "Life services > Grocery delivery > Cart",
             "Nearby > Convenience stores > Member code", "Life services > Grocery delivery > Fresh produce",
             "Pay > Payment code > Supermarket checkout", "Nearby > Coupons > Supermarket voucher"),
        minis=("Hema Fresh", "Dingdong Maicai", "Pagoda Fruit", "Sam's Club", "RT-Mart Online", "FamilyMart Members"),
        apps=("Hema", "Dingdong Maicai", "Sam's Club", "Duoduo Maicai"),
        queries=("grocery delivery 30 minutes", "hema fresh coupon", "cheap eggs near me",
                 "fruit delivery", "supermarket open now", "organic vegetables delivery"),
        hours=_hours((9, 1.0), (19, 2.0)),
    ),
    Category(
        name="dining_out",
        label="restaurant",
        merchants=("Haidilao Hot Pot", "Xibei", "Din Tai Fung", "Starbucks", "Green Tea Restaurant",
                   "Jiumaojiu", "Tai Er Sauerkraut Fish", "Pizza Hut", "Quanjude Roast Duck", "Manner Coffee"),
        items=(("Dinner for two", 120, 380), ("Hot pot dinner", 150, 500), ("Americano", 15, 35),
               ("Team lunch", 200, 800), ("Roast duck set", 180, 450), ("Brunch set", 45, 120),
               ("Birthday dinner", 300, 1200), ("Coffee and cake", 35, 80)),
        spm=("Nearby > Restaurants > Queue number", "Nearby > Restaurants > Group-buy deals",
             "Pay > Scan to pay > Restaurant bill", "Nearby > Restaurants > Table booking",
             "Nearby > Coffee shops > Member card"),
        minis=("Haidilao", "Starbucks", "Xibei Ordering", "Manner Coffee", "Pizza Hut", "Dianping Deals"),
        apps=("Dianping", "Starbucks", "Haidilao"),
        queries=("restaurants open late", "haidilao queue time", "best roast duck in town",
                 "group buy dinner deals", "coffee shop near me", "anniversary dinner restaurant"),
        hours=_hours((12, 1.5), (19, 2.5)),
    ),
    Category(
        name="transport",
        label="transport",
        merchants=("Didi Chuxing", "Metro", "Hello Bike", "Sinopec Gas Station", "12306 Railway",
                   "Meituan Bike", "T3 Mobility", "City Bus", "Cao Cao Mobility", "Parking Lot"),
        items=(("Ride to office", 15, 60), ("Metro fare", 2, 9), ("Bike ride", 1.5, 4.5),
               ("Gasoline 92#", 200, 450), ("High-speed rail ticket", 55, 600), ("Airport ride", 80, 220),
               ("Parking fee", 5, 40), ("Bus fare", 1, 3), ("Late-night ride home", 25, 90)),
        spm=("Transport > Metro QR code", "Transport > Ride hailing > Didi", "Transport > Bike sharing > Scan to unlock",
             "Transport > Train tickets > Seat selection", "Transport > Bus code", "Transport > Parking payment"),
        minis=("Didi Rides", "Hello Bike", "Metro Ride Code", "12306 Train Tickets", "Amap Taxi", "ETC Toll Service"),
        apps=("Didi", "Amap", "Baidu Maps", "Railway 12306", "Hello"),
        queries=("metro line 2 schedule", "didi coupon", "train tickets to shanghai", "nearest gas station",
                 "bike sharing monthly pass", "airport shuttle bus"),
        hours=_hours((8, 2.5), (18, 2.5), (23, 0.5)),
    ),
    Category(
        name="games",
        label="mobile games",
        merchants=("Tencent Games", "miHoYo", "NetEase Games", "Steam", "Lilith Games", "Papergames",
                   "Perfect World", "Hypergryph"),
        items=(("Honor of Kings hero skin", 28, 288), ("Genshin Impact Genesis Crystals", 30, 648),
               ("Peacekeeper Elite UC", 6, 328), ("Steam wallet top-up", 50, 500), ("Battle pass season", 30, 98),
               ("Arknights Originium", 6, 648), ("Eggy Party coins", 6, 98), ("Monthly game card", 25, 30),
               ("Gacha pull bundle", 68, 648), ("Onmyoji jade pack", 30, 328)),
        spm=("Games > Game center > Top-up", "Games > Honor of Kings > Skin shop", "Games > Game center > New releases",
             "Games > Genshin Impact > Recharge", "Games > Game center > Gift codes", "Games > Esports > Live match"),
        minis=("Happy Landlord (Doudizhu)", "Sheep a Sheep", "Game Top-up Center", "Jump Jump", "Mahjong Together",
               "Honor of Kings Assistant", "Tile Match Puzzle"),
        apps=("Honor of Kings", "Genshin Impact", "Peacekeeper Elite", "Eggy Party", "Onmyoji", "Arknights",
              "Honkai: Star Rail", "League of Legends: Wild Rift", "Huya Live", "TapTap"),
        queries=("genshin new banner", "honor of kings skin sale", "best gaming phone 2026",
                 "peacekeeper elite tips", "steam summer sale", "arknights event guide",
                 "game top-up discount", "star rail codes", "wild rift tier list", "cheap game cards"),
        hours=_hours((13, 0.8), (21, 3.0), (23, 1.5)),
    ),
    Category(
        name="video_music",
        label="entertainment",
        merchants=("iQIYI", "Tencent Video", "Bilibili", "Youku", "NetEase Cloud Music", "QQ Music",
                   "Maoyan Movies", "Kugou Music"),
        items=(("VIP monthly membership", 15, 30), ("Movie tickets x2", 60, 140), ("Annual video membership", 148, 258),
               ("Music premium subscription", 8, 18), ("Concert ticket", 280, 1280), ("Livestream gift", 1, 100)),
        spm=("Entertainment > Movie tickets > Showtimes", "Entertainment > Video memberships > Renew",
             "Entertainment > Concert tickets", "Entertainment > Music > Member center"),
        minis=("Maoyan Movies", "iQIYI", "Tencent Video", "Damai Tickets", "QQ Music"),
        apps=("Douyin", "Bilibili", "iQIYI", "Tencent Video", "Kuaishou", "NetEase Cloud Music", "Xiaohongshu"),
        queries=("new movies this weekend", "iqiyi vip discount", "concert tickets", "trending drama 2026",
                 "bilibili premium", "movie showtimes near me"),
        hours=_hours((20, 2.5), (23, 1.0)),
    ),
    Category(
        name="shopping",
        label="online shopping",
        merchants=("Taobao", "Tmall", "JD.com", "Pinduoduo", "Vipshop", "Douyin Mall", "Uniqlo", "Xiaohongshu Store"),
        items=(("Cotton T-shirt", 29, 129), ("Running sneakers", 199, 899), ("Summer dress", 89, 399),
               ("Phone case", 9.9, 49), ("Skincare set", 129, 699), ("Kitchen storage boxes", 19, 79),
               ("Winter down jacket", 299, 1299), ("Backpack", 79, 399), ("Bedding set", 129, 499),
               ("Pet food 10kg", 99, 299)),
        spm=("Shopping > Taobao > Order payment", "Shopping > Flash sales", "Shopping > Cart > Checkout",
             "Shopping > Logistics > Package tracking", "Shopping > Refunds > Return request",
             "Shopping > Huabei installment > Plans"),
        minis=("Taobao Flash Sale", "Tmall Supermarket", "Pinduoduo", "JD Shopping", "Xianyu Second-hand", "Vipshop"),
        apps=("Taobao", "Pinduoduo", "JD", "Xianyu", "Xiaohongshu", "Vipshop"),
        queries=("running shoes sale", "summer dress", "phone case cute", "double 11 deals",
                 "skincare for dry skin", "cheap backpack", "down jacket women", "pet food discount"),
        hours=_hours((12, 1.0), (21, 2.5), (23, 1.0)),
    ),
    Category(
        name="electronics",
        label="electronics",
        merchants=("Apple Store", "Huawei Store", "Xiaomi Store", "JD Electronics", "Suning", "DJI Store", "OPPO Store"),
        items=(("Smartphone", 1999, 9999), ("Wireless earbuds", 199, 1899), ("Laptop", 4999, 19999),
               ("Tablet", 2499, 8999), ("Smart watch", 799, 3999), ("Phone charger", 49, 199),
               ("Camera drone", 2999, 12999), ("Mechanical keyboard", 299, 1299)),
        spm=("Shopping > Electronics > Product page", "Shopping > Trade-in > Device valuation",
             "Shopping > Electronics > Installment checkout", "Shopping > Electronics > Compare models"),
        minis=("Apple Trade-in", "Huawei Mall", "Xiaomi Mall", "Aihuishou Recycling"),
        apps=("Apple Store", "Huawei Mall", "Xiaomi Mall", "ZOL"),
        queries=("best phone 2026", "iphone trade in price", "noise cancelling earbuds",
                 "laptop for programming", "smart watch comparison", "drone for beginners"),
        hours=_hours((14, 1.0), (21, 1.8)),
    ),
    Category(
        name="luxury",
        label="luxury",
        merchants=("Louis Vuitton", "Gucci", "Chow Tai Fook", "Cartier", "SKP Mall", "Hermes", "Dior Beauty",
                   "Lao Feng Xiang Jewelry"),
        items=(("Leather handbag", 8000, 45000), ("Gold bracelet", 3000, 20000), ("Luxury watch", 20000, 120000),
               ("Silk scarf", 2500, 6000), ("Perfume gift set", 900, 3500), ("Diamond ring", 10000, 80000),
               ("Designer sunglasses", 2500, 6500)),
        spm=("Shopping > Luxury > Brand boutique", "Shopping > Luxury > Authenticity check",
             "Wealth > Gold > Buy gold", "Shopping > Luxury > VIP concierge"),
        minis=("SKP Mall", "Chow Tai Fook", "Tmall Luxury Pavilion", "Duty Free Shopping"),
        apps=("Tmall Luxury", "Secoo", "Poizon"),
        queries=("lv bag price", "gold price today", "luxury watch authentication", "duty free shopping hainan",
                 "cartier love bracelet", "designer handbag sale"),
        hours=_hours((15, 2.0), (20, 1.0)),
    ),
    Category(
        name="travel",
        label="travel",
        merchants=("Ctrip", "Fliggy", "Qunar", "Atour Hotel", "Marriott", "Hanting Hotel", "China Eastern Airlines",
                   "Spring Airlines"),
        items=(("Hotel night", 180, 1800), ("Round-trip flight", 600, 4500), ("Theme park tickets", 299, 799),
               ("Holiday package", 2000, 12000), ("Scenic spot ticket", 40, 260), ("Travel insurance", 10, 80)),
        spm=("Travel > Hotels > Room selection", "Travel > Flights > Booking", "Travel > Attractions > Tickets",
             "Travel > Visa services", "Travel > Hotels > Order details"),
        minis=("Ctrip Travel", "Fliggy", "Qunar Hotels", "Hanting Hotels", "Airport VIP Lounge"),
        apps=("Ctrip", "Fliggy", "Qunar", "Mafengwo", "Umetrip"),
        queries=("cheap flights to sanya", "hotel near west lake", "weekend trip ideas", "disneyland tickets",
                 "visa for japan", "hotel deals this weekend"),
        hours=_hours((10, 1.0), (21, 1.5)),
    ),
    Category(
        name="utilities",
        label="utilities",
        merchants=("State Grid", "China Mobile", "China Unicom", "City Water Group", "Towngas",
                   "Property Management", "China Telecom"),
        items=(("Electricity bill", 60, 480), ("Phone top-up", 30, 200), ("Water bill", 20, 120),
               ("Gas bill", 30, 260), ("Property fee", 150, 900), ("Broadband fee", 50, 199)),
        spm=("Life services > Utilities > Electricity", "Life services > Mobile top-up", "Life services > Utilities > Water",
             "Life services > Utilities > Gas", "Life services > Property fees"),
        minis=("State Grid Online", "China Mobile", "Utilities Payment", "Property Services"),
        apps=("China Mobile", "State Grid Online", "China Unicom"),
        queries=("pay electricity bill", "mobile data plan", "water bill due date", "broadband outage"),
        hours=_hours((10, 1.0), (20, 1.0)),
    ),
    Category(
        name="health",
        label="health",
        merchants=("Dingdang Pharmacy", "Alibaba Health", "City Hospital", "Meinian Health Checkup",
                   "Yifeng Pharmacy", "Dental Clinic"),
        items=(("Cold medicine", 15, 60), ("Hospital registration fee", 10, 100), ("Health checkup package", 399, 1999),
               ("Vitamins", 49, 199), ("Dental cleaning", 150, 500), ("Medical insurance premium", 99, 1200)),
        spm=("Health > Medical insurance > My card", "Health > Hospital > Appointment", "Health > Pharmacy > Order medicine",
             "Health > Checkups > Packages"),
        minis=("Medical Insurance Code", "Hospital Appointments", "Dingdang Pharmacy", "Health Checkup Booking"),
        apps=("Alibaba Health", "Ping An Good Doctor", "Keep"),
        queries=("fever medicine delivery", "hospital appointment", "dentist near me", "health checkup price"),
        hours=_hours((9, 1.5), (15, 1.0)),
    ),
    Category(
        name="finance",
        label="finance",
        merchants=("Yu'e Bao", "Ant Fortune", "Huabei", "China Merchants Bank", "Ant Insurance", "ICBC"),
        items=(("Fund purchase", 100, 5000), ("Credit card repayment", 300, 8000), ("Huabei repayment", 100, 3000),
               ("Transfer to savings", 500, 10000), ("Insurance premium", 50, 800), ("Red packet to friend", 6.66, 200)),
        spm=("Wealth > Funds > Buy", "Wealth > Yu'e Bao > Transfer in", "Transfer > To friend", "Bills > Monthly statement",
             "Credit card > Repayment", "Wealth > Funds > Holdings"),
        minis=("Ant Fortune", "Credit Card Repayment", "Insurance Services", "Sesame Credit"),
        apps=("Alipay Wealth", "China Merchants Bank", "Tonghuashun", "ICBC Mobile Banking"),
        queries=("best fund to buy", "yu'e bao interest rate", "how to raise sesame credit", "credit card repayment date",
                 "stock market today"),
        hours=_hours((10, 1.0), (21, 1.0)),
    ),
    Category(
        name="education",
        label="education",
        merchants=("Youdao", "Zuoyebang", "New Oriental", "Dangdang Books", "Coursera China", "Fenbi"),
        items=(("Online course", 99, 1999), ("Textbooks", 30, 180), ("Exam prep package", 199, 2999),
               ("Language app subscription", 30, 298), ("Kids tutoring session", 150, 600)),
        spm=("Education > Courses > Enroll", "Education > Exam registration", "Education > Library card"),
        minis=("Youdao Dictionary", "Zuoyebang", "Exam Registration", "Kids Tutoring"),
        apps=("Youdao", "Baicizhan", "Zuoyebang", "WeRead", "Duolingo"),
        queries=("ielts prep course", "civil service exam", "english vocabulary app", "kids math tutoring"),
        hours=_hours((9, 1.0), (20, 1.8)),
    ),
)

# Behaviour that belongs to no category: housekeeping pages, tools and generic searches.
GENERAL_SPM: tuple[str, ...] = (
    "Balance > Details", "Bills > This month", "Me > Settings > Security", "Payment code > Refresh",
    "Messages > Notifications", "Scan > QR result", "Me > Sesame credit", "Four quick entries",
    "Me > Coupons", "Payment result > Recommended services",
)
GENERAL_MINIS: tuple[str, ...] = (
    "Health Code", "Express Delivery Tracking", "Weather", "Ant Forest", "Ant Farm", "Alipay Red Packets",
    "Real-name Verification", "Social Security Query",
)
GENERAL_APPS: tuple[str, ...] = (
    "WeChat", "Alipay", "Baidu", "Weibo", "Amap", "Camera", "Toutiao", "DingTalk",
)
GENERAL_QUERIES: tuple[str, ...] = (
    "weather tomorrow", "express delivery tracking", "social security balance", "ant forest energy",
    "holiday schedule 2026", "how to change payment password", "customer service", "red packet code",
)

SPM_ACTIONS: tuple[str, ...] = (
    "", "", "", "Back", "Share", "Coupon popup", "Confirm", "Details", "Scroll", "Close ad",
)
APP_LABELS: dict[str, str] = {c.name: c.label for c in CATEGORIES}

# Laundering-style bill patterns: payees that are new and opaque, round amounts, night-time.
SHELL_CITIES: tuple[str, ...] = ("Shenzhen", "Dongguan", "Yiwu", "Guangzhou", "Xiamen", "Wenzhou", "Kunming",
                                 "Nanning", "Hangzhou", "Quanzhou")
SHELL_WORDS: tuple[str, ...] = ("Huaxin", "Jinrui", "Hengtai", "Xinda", "Ruifeng", "Boyuan", "Tianyu",
                                "Hongsheng", "Dingli", "Kaixuan", "Yongfa", "Longteng")
SHELL_KINDS: tuple[str, ...] = ("Trading Co.", "Technology Co.", "Commerce Ltd.", "Supply Chain Co.",
                                "Consulting Studio", "E-commerce Store")
ROUND_AMOUNTS: tuple[float, ...] = (500.0, 1000.0, 2000.0, 3000.0, 5000.0, 8000.0, 9900.0, 10000.0, 20000.0,
                                    49999.0)
LAUNDER_SPM: tuple[str, ...] = (
    "Transfer > To bank card > Confirm", "Transfer > To account > New payee", "Transfer > Transfer limit > Raise limit",
    "Merchant services > Collection code > Withdraw", "Transfer > To bank card > Failed > Retry",
)
LAUNDER_MINIS: tuple[str, ...] = ("Cross-border Remittance", "Merchant Collection Assistant", "Bank Card Manager",
                                  "Virtual Goods Top-up")
LAUNDER_QUERIES: tuple[str, ...] = ("raise transfer limit", "transfer without verification", "collection code for business",
                                    "why was my transfer refunded", "multiple accounts same id", "withdraw to bank card fast")

CATEGORY_INDEX: dict[str, int] = {c.name: i for i, c in enumerate(CATEGORIES)}
