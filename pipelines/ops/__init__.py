"""Operations on the lake: Delta upkeep and erasure of users."""
