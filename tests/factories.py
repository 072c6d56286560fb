import factory

from members.models import Member, User
from members.services import member_create


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"shopper{n}@example.com")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    password = factory.PostGenerationMethodCall("set_password", "correct-horse-42")

    @factory.post_generation
    def save_password(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class StaffFactory(UserFactory):
    is_staff = True
    is_superuser = True
    email = factory.Sequence(lambda n: f"staff{n}@example.com")


class MemberFactory(factory.django.DjangoModelFactory):
    """A member made through the real service, so card numbers are real."""

    class Meta:
        model = Member

    user = factory.SubFactory(UserFactory)

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        user = kwargs.pop("user")
        kwargs.setdefault("first_name", user.first_name)
        kwargs.setdefault("last_name", user.last_name)
        return member_create(user=user, **kwargs)


class PartnerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "partners.Partner"
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"partner-{n}")
    name = factory.Sequence(lambda n: f"Partner {n}")


class StoreFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "partners.Store"

    partner = factory.SubFactory(PartnerFactory)
    code = factory.Sequence(lambda n: f"store-{n}")
    name = factory.Sequence(lambda n: f"Store {n}")


class TerminalFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "partners.Terminal"

    store = factory.SubFactory(StoreFactory)
    name = factory.Sequence(lambda n: f"Till {n}")
