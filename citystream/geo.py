"""Seoul's 25 autonomous districts: romanised id, names, centroid and river frontage."""

from __future__ import annotations

from typing import NamedTuple


class District(NamedTuple):
    id: str
    name_en: str
    name_ko: str
    lat: float
    lon: float
    han_river: bool


DISTRICTS: tuple[District, ...] = (
    District("dobong", "Dobong-gu", "도봉구", 37.6688, 127.0471, False),
    District("dongdaemun", "Dongdaemun-gu", "동대문구", 37.5744, 127.0396, False),
    District("dongjak", "Dongjak-gu", "동작구", 37.5124, 126.9393, True),
    District("eunpyeong", "Eunpyeong-gu", "은평구", 37.6027, 126.9291, False),
    District("gangbuk", "Gangbuk-gu", "강북구", 37.6398, 127.0255, False),
    District("gangdong", "Gangdong-gu", "강동구", 37.5301, 127.1238, True),
    District("gangnam", "Gangnam-gu", "강남구", 37.5172, 127.0473, True),
    District("gangseo", "Gangseo-gu", "강서구", 37.5509, 126.8495, True),
    District("geumcheon", "Geumcheon-gu", "금천구", 37.4569, 126.8955, False),
    District("guro", "Guro-gu", "구로구", 37.4954, 126.8874, False),
    District("gwanak", "Gwanak-gu", "관악구", 37.4784, 126.9516, False),
    District("gwangjin", "Gwangjin-gu", "광진구", 37.5385, 127.0823, True),
    District("jongno", "Jongno-gu", "종로구", 37.5735, 126.9790, False),
    District("jung", "Jung-gu", "중구", 37.5641, 126.9979, False),
    District("jungnang", "Jungnang-gu", "중랑구", 37.6066, 127.0927, False),
    District("mapo", "Mapo-gu", "마포구", 37.5663, 126.9019, True),
    District("nowon", "Nowon-gu", "노원구", 37.6542, 127.0568, False),
    District("seocho", "Seocho-gu", "서초구", 37.4837, 127.0324, True),
    District("seodaemun", "Seodaemun-gu", "서대문구", 37.5791, 126.9368, False),
    District("seongbuk", "Seongbuk-gu", "성북구", 37.5894, 127.0167, False),
    District("seongdong", "Seongdong-gu", "성동구", 37.5634, 127.0369, True),
    District("songpa", "Songpa-gu", "송파구", 37.5145, 127.1059, True),
    District("yangcheon", "Yangcheon-gu", "양천구", 37.5170, 126.8665, False),
    District("yeongdeungpo", "Yeongdeungpo-gu", "영등포구", 37.5264, 126.8962, True),
    District("yongsan", "Yongsan-gu", "용산구", 37.5326, 126.9905, True),
)

BY_ID: dict[str, District] = {d.id: d for d in DISTRICTS}


def is_district(name: str) -> bool:
    return name in BY_ID
