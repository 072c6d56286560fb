from hypothesis import given
from hypothesis import strategies as st

from members.cards import card_number_display, card_number_generate, card_number_is_valid


def test_generated_card_numbers_are_valid_ean13():
    for _ in range(200):
        number = card_number_generate()
        assert card_number_is_valid(number)
        assert number.startswith("60")


@given(st.integers(min_value=0, max_value=11), st.integers(min_value=1, max_value=9))
def test_a_mistyped_digit_is_caught(position, delta):
    number = card_number_generate()
    typo = number[:position] + str((int(number[position]) + delta) % 10) + number[position + 1 :]
    assert not card_number_is_valid(typo)


def test_card_number_is_grouped_for_reading_aloud():
    assert card_number_display("6001234567890") == "6001 2345 6789 0"
