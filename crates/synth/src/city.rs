//! The reference city: Jiangzhou (江州市), two counties, eight police stations, their
//! roads, hospitals and pharmacies, and the name and region-code pools.

use serde::Serialize;

/// The city every address lies in (not written into addresses; documented only).
pub const CITY_ZH: &str = "江州市";
pub const CITY_EN: &str = "Jiangzhou";

/// A police station of the reference city.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Station {
    /// `S01` … `S08`.
    pub code: &'static str,
    pub name_zh: &'static str,
    pub name_en: &'static str,
    /// `C1` for S01–S04, `C2` for S05–S08.
    pub county_code: &'static str,
    pub county_zh: &'static str,
    pub county_en: &'static str,
    /// The sub-district or town the station covers; every address in its area starts
    /// with `county_zh` + `area_zh`.
    pub area_zh: &'static str,
}

const fn station(
    code: &'static str,
    name_zh: &'static str,
    name_en: &'static str,
    county: u8,
    area_zh: &'static str,
) -> Station {
    let (county_code, county_zh, county_en) = if county == 1 {
        ("C1", "临江区", "Linjiang District")
    } else {
        ("C2", "青山县", "Qingshan County")
    };
    Station {
        code,
        name_zh,
        name_en,
        county_code,
        county_zh,
        county_en,
        area_zh,
    }
}

/// The eight police stations of the reference city.
pub const STATIONS: [Station; 8] = [
    station(
        "S01",
        "东城派出所",
        "Dongcheng Police Station",
        1,
        "东城街道",
    ),
    station("S02", "西城派出所", "Xicheng Police Station", 1, "西城街道"),
    station("S03", "南湖派出所", "Nanhu Police Station", 1, "南湖街道"),
    station("S04", "北苑派出所", "Beiyuan Police Station", 1, "北苑街道"),
    station("S05", "城关派出所", "Chengguan Police Station", 2, "城关镇"),
    station("S06", "白沙派出所", "Baisha Police Station", 2, "白沙镇"),
    station("S07", "金桥派出所", "Jinqiao Police Station", 2, "金桥镇"),
    station("S08", "新港派出所", "Xingang Police Station", 2, "新港镇"),
];

/// Roads per station area.
pub const ROADS_PER_STATION: u64 = 10;

const ROAD_PREFIXES: [&str; 20] = [
    "和平", "人民", "解放", "建设", "中山", "胜利", "新华", "文化", "光明", "幸福", "长江", "滨江",
    "友谊", "团结", "朝阳", "东风", "红旗", "青年", "学府", "园林",
];
const ROAD_SUFFIXES: [&str; 4] = ["路", "街", "大道", "巷"];

/// Road `r` (0..10) of station `s` (0..8); all 80 names are distinct.
pub fn road(s: usize, r: usize) -> (&'static str, &'static str) {
    let k = s * ROADS_PER_STATION as usize + r;
    (ROAD_PREFIXES[k % 20], ROAD_SUFFIXES[(k / 20) % 4])
}

/// Hospitals: (name, county 0 = city-wide / 1 = C1 / 2 = C2).
pub const HOSPITALS: [(&str, u8); 8] = [
    ("江州市第一人民医院", 0),
    ("江州市中心医院", 0),
    ("江州市中医院", 0),
    ("江州市精神卫生中心", 0),
    ("江州市妇幼保健院", 0),
    ("临江区人民医院", 1),
    ("青山县人民医院", 2),
    ("青山县中医院", 2),
];
pub const HOSPITAL_PSYCHIATRIC: usize = 3;
pub const HOSPITAL_CHILDREN: usize = 4;

pub const PHARMACIES: [&str; 9] = [
    "老百姓大药房",
    "益丰大药房",
    "国大药房",
    "大参林药店",
    "海王星辰药房",
    "江州市第一人民医院门诊药房",
    "临江区人民医院门诊药房",
    "青山县人民医院门诊药房",
    "江州市精神卫生中心门诊药房",
];
pub const PHARMACY_PSYCHIATRIC: usize = 8;

/// Real county-level administrative division codes (GB/T 2260), used as the birth-place
/// prefix of ID numbers.
pub const REGION_CODES: [&str; 32] = [
    "110101", "110105", "120101", "130102", "140105", "150102", "210102", "220102", "230102",
    "310101", "310115", "320102", "330106", "340102", "350102", "360102", "370102", "410105",
    "420106", "420111", "430104", "440104", "440305", "450102", "460105", "500103", "510107",
    "520102", "530102", "610113", "620102", "650102",
];

/// Mobile prefixes (13x–19x).
pub const PHONE_PREFIXES: [&str; 36] = [
    "130", "131", "132", "133", "134", "135", "136", "137", "138", "139", "150", "151", "152",
    "153", "155", "156", "157", "158", "159", "166", "173", "175", "176", "177", "180", "181",
    "182", "183", "184", "185", "186", "187", "188", "189", "198", "199",
];

/// Common surnames, most frequent first.
pub const SURNAMES: [&str; 100] = [
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "高", "林", "罗", "郑", "梁", "谢", "宋", "唐", "许", "韩", "冯", "邓", "曹", "彭", "曾",
    "肖", "田", "董", "袁", "潘", "于", "蒋", "蔡", "余", "杜", "叶", "程", "苏", "魏", "吕", "丁",
    "任", "沈", "姚", "卢", "姜", "崔", "钟", "谭", "陆", "汪", "范", "金", "石", "廖", "贾", "夏",
    "韦", "付", "方", "白", "邹", "孟", "熊", "秦", "邱", "江", "尹", "薛", "闫", "段", "雷", "侯",
    "龙", "史", "陶", "黎", "贺", "顾", "毛", "郝", "龚", "邵", "万", "钱", "严", "覃", "武", "戴",
    "莫", "孔", "欧阳", "司马",
];

pub const GIVEN_MALE: [&str; 48] = [
    "伟", "强", "磊", "军", "洋", "勇", "杰", "涛", "明", "超", "刚", "平", "辉", "鹏", "华", "飞",
    "鑫", "波", "斌", "宇", "浩", "凯", "健", "俊", "帆", "帅", "旭", "宁", "龙", "林", "阳", "建",
    "国", "峰", "志", "文", "博", "晨", "轩", "睿", "昊", "天", "子", "泽", "海", "家", "新", "永",
];

pub const GIVEN_FEMALE: [&str; 48] = [
    "芳", "娜", "敏", "静", "丽", "艳", "娟", "霞", "秀", "英", "玲", "桂", "丹", "萍", "红", "玉",
    "兰", "燕", "梅", "琳", "婷", "雪", "倩", "颖", "慧", "佳", "欣", "怡", "悦", "晶", "洁", "薇",
    "月", "琴", "云", "莉", "珊", "蓉", "露", "思", "雨", "梦", "诗", "嘉", "晓", "春", "秋", "雅",
];

/// Names of Uyghur and other minority residents, written with the middle dot.
pub const MINORITY_NAMES: [&str; 8] = [
    "买买提·艾力",
    "阿依古丽·吐尔逊",
    "艾尔肯·阿不都",
    "热依拉·买买提",
    "古丽米拉·艾山",
    "阿卜杜拉·热合曼",
    "帕提古丽·依明",
    "努尔艾力·卡德尔",
];
