"""Fixed texts for the compression table: news, Korean, code, math and science, written for flaxchat."""

NEWS = """
(Riverton, March 3) - The city council voted 7-2 on Tuesday night to extend the evening bus service on
routes 4, 11 and 27 until midnight, starting in May. The change will cost about $1.8 million a year,
paid for by a temporary parking surcharge downtown. "Shift workers have asked for this for years," said
council member Dana Ortiz, who proposed the plan. Opponents argued that ridership after 9 p.m. has
fallen 12% since 2019 and that the surcharge will hurt small shops. The transit agency will publish
new timetables next month and review the numbers after a six-month trial.
""".strip()

KOREAN = """
작은 마을 도서관은 매주 토요일 아침에 어린이를 위한 이야기 시간을 연다. 자원봉사자들은 그림책을 읽어 주고,
아이들은 들은 이야기를 바탕으로 자기만의 결말을 그려 본다. 도서관장은 "책을 좋아하게 되는 데에는
거창한 계기가 필요하지 않다"며 "함께 읽는 경험이 가장 큰 힘이 된다"고 말했다.
""".strip()

CODE = '''
def merge_pairs(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of `pair` in `ids` with `new_id`."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def pair_counts(ids: list[int]) -> dict[tuple[int, int], int]:
    counts: dict[tuple[int, int], int] = {}
    for a, b in zip(ids, ids[1:]):
        counts[(a, b)] = counts.get((a, b), 0) + 1
    return counts
'''.strip()

MATH = r"""
\begin{theorem}
For every integer $n \ge 1$, $\sum_{k=1}^{n} (2k - 1) = n^2$.
\end{theorem}
\begin{proof}
By induction on $n$. For $n = 1$ both sides equal $1$. Suppose $\sum_{k=1}^{n} (2k-1) = n^2$. Then
\[
  \sum_{k=1}^{n+1} (2k-1) = n^2 + (2(n+1) - 1) = n^2 + 2n + 1 = (n+1)^2,
\]
which completes the induction.
\end{proof}
""".strip()

SCIENCE = """
Water moves from the roots of a plant to its leaves mostly by transpiration: as water evaporates from
tiny pores called stomata, it pulls a continuous column of water up through the xylem. Cohesion between
water molecules, caused by hydrogen bonding, keeps the column from breaking, while adhesion to the
vessel walls helps it climb. On a hot, dry, windy day a large tree can move several hundred liters this
way, and closing the stomata is the plant's main tool for limiting the loss.
""".strip()

SAMPLE_TEXTS = [("news", NEWS), ("korean", KOREAN), ("code", CODE), ("math", MATH), ("science", SCIENCE)]
